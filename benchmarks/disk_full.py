"""Fill the store's disk, or turn it read-only, in the middle of a CLI run; repair it, run
again, and count what was saved, billed twice and lost.

Each scenario: a fresh DuckDB file on its own small filesystem, the CLI seeding against the
loopback augmentation server (log-normal latency), the disk broken ``--at`` seconds in, the
disk repaired once the run has ended, the same command again to the end. The server's request
log tells what was sent twice; compare with the requests in flight (``--batch-size``).

- disk full (64 MB tmpfs): a ballast file takes all the space left; repair: delete it.
- read-only ext4 (image on a loop device, ``errors=remount-ro``): an ext4 error triggered via
  sysfs makes the kernel force it read-only, as a real disk error does (writes get EROFS);
  repair: unmount, e2fsck, mount. (A plain ``mount -o remount,ro`` is refused while DuckDB
  has its file open, so a running store turns read-only only this way.) What the kernel had
  not yet put on the disk is lost then, as in a machine crash: up to about a second of results.

Needs root, only to mount; without it, it says so and exits 0.

    python benchmarks/disk_full.py [--conversations 600] [--batch-size 20] [--at 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb

from kill_resume import KEY, add_run_arguments, conversation_of, start_cli
from realistic import write_seed_file

from memori_nb.testing import AugmentationServer, lognormal_latency


def sh(*cmd: str) -> str:
    """Run a command; '' when it worked, else the first line of its error output."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr.strip() or "failed").splitlines()[0]


def fill(directory: Path) -> str:
    """A ballast file taking every byte left: fallocate the bulk, then write up to ENOSPC."""
    with open(directory / "ballast", "wb", buffering=0) as ballast:
        free = os.statvfs(directory)
        try:
            os.posix_fallocate(ballast.fileno(), 0, free.f_bavail * free.f_frsize)
        except OSError:
            pass  # the database grew since statvfs: the writes below take what is left
        ballast.seek(0, os.SEEK_END)
        try:
            while True:
                ballast.write(b"\0" * 4096)
        except OSError as exc:
            return f"ballast file written until {exc.strerror}"


def start_cli_logged(seed_file: Path, db: Path, server: AugmentationServer, batch: int,
                     stderr: Path) -> subprocess.Popen:
    with stderr.open("w") as sink:
        return start_cli(seed_file, db, server, batch, stderr=sink)


def finish(cli: subprocess.Popen, timeout: float = 120.0) -> int | str:
    """The exit code, or 'hung' (then killed): a run stuck on a broken disk is a result too."""
    try:
        return cli.wait(timeout)
    except subprocess.TimeoutExpired:
        cli.kill()
        cli.wait()
        return "hung"


def messages(stderr: Path) -> list[str]:
    """stderr without the progress bar's refreshes: what the user reads after the bar."""
    lines = [line.strip() for line in stderr.read_text(errors="replace").splitlines()]
    return [line for line in lines if line and not line.startswith("seeding:")]


def ledger(db: Path) -> tuple[int, str]:
    """Conversations in the no-double-billing ledger, and the first run's status."""
    with duckdb.connect(str(db), read_only=True) as conn:
        saved = conn.execute("SELECT count(*) FROM seeded_conversations").fetchone()[0]
        status = conn.execute("SELECT status FROM runs ORDER BY started_at LIMIT 1").fetchone()
    return saved, status[0] if status else "no row"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--at", type=float, default=2.0,
                        help="seconds after the start at which the disk breaks")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("disk_full needs root to mount a tmpfs and a loop device; nothing measured.")
        return
    work = Path(tempfile.mkdtemp(prefix="disk-full-"))
    seed_file, image = work / "seed.json", work / "ext4.img"
    write_seed_file(seed_file, args.conversations, scale=args.scale)
    full, ro_ext4 = work / "full", work / "ro-ext4"

    def break_ext4() -> str:  # what a failing disk does: ext4 aborts and goes read-only
        device = Path(subprocess.check_output(["findmnt", "-no", "SOURCE", str(ro_ext4)],
                                              text=True).strip()).name
        Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("disk_full benchmark\n")
        return "ext4 error triggered, the kernel made it read-only"

    def repair_ext4() -> str:
        error = sh("umount", str(ro_ext4))
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)  # 1: errors fixed
        return error or sh("mount", "-o", "loop,errors=remount-ro", str(image), str(ro_ext4))

    # (name, mount point, break the disk, repair it): break and repair return a note.
    scenarios = [
        ("disk full", full, lambda: fill(full), lambda: (full / "ballast").unlink() or ""),
        ("read-only ext4", ro_ext4, break_ext4, repair_ext4)]
    print(f"{args.conversations:,} conversations, batch {args.batch_size}, latency log-normal "
          f"median 0.1 s sigma 0.6, disk broken {args.at:g} s into the run")
    rows, notes, mounted, cli = [], [], [], None
    try:
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        for point, mount in ((full, ["-t", "tmpfs", "-o", "size=64M", "tmpfs"]),
                             (ro_ext4, ["-o", "loop,errors=remount-ro", str(image)])):
            point.mkdir()  # 64 MB each: ~10x what the finished database needs
            subprocess.run(["mount", *mount, str(point)], check=True)
            mounted.append(point)
        for name, point, break_disk, repair in scenarios:
            db, stderr = point / "memori.duckdb", work / f"{point.name}.stderr"
            with AugmentationServer(api_key=KEY, latency=lognormal_latency(0.1, 0.6, seed=1)) \
                    as server:
                cli = start_cli_logged(seed_file, db, server, args.batch_size, stderr)
                time.sleep(args.at)
                broke = break_disk()
                code = finish(cli)
                first = server.request_count
                first_run = {conversation_of(r.body) for r in server.requests if r.body}
                repaired = repair()
                saved, status_after_fail = ledger(db)
                cli = start_cli_logged(seed_file, db, server, args.batch_size, work / "rerun.stderr")
                rerun = finish(cli)
                second = {conversation_of(r.body) for r in server.requests[first:] if r.body}
            total, status_after_rerun = ledger(db)
            rows.append(f"{name:<16} {code:>4} {first:>8,} {saved:>6,} "
                        f"{len(first_run & second):>12,} {args.batch_size:>15,} "
                        f"{args.conversations - total:>5,}  {status_after_fail} -> "
                        f"{status_after_rerun} (re-run exit {rerun})")
            notes.append((name, broke, repaired, messages(stderr)))
    finally:
        if cli is not None and cli.poll() is None:  # this script failed mid-scenario
            cli.kill()
            cli.wait()
        for point in reversed(mounted):  # lazily if still busy, so no mount outlives us
            if sh("umount", str(point)):
                sh("umount", "-l", str(point))
    print(f"{'scenario':<16} {'exit':>4} {'sent 1st':>8} {'saved':>6} {'billed twice':>12} "
          f"{'in-flight bound':>15} {'lost':>5}  first run's row: after fail -> after re-run")
    print("\n".join(rows))
    for name, broke, repaired, lines in notes:
        print(f"\n{name}: {broke}; repair: {repaired or 'done'}. The failing run's stderr has "
              f"{len(lines)} lines besides the progress bar; the last ones:")
        print("\n".join(f"  | {line}" for line in lines[-4:]) or "  | (nothing)")


if __name__ == "__main__":
    main()
