from memori_nb.cli import main

raise SystemExit(main())
