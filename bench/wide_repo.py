"""The wide-DAG benchmark's project: a git repository whose pipeline has JOBS independent no-op jobs, and the
same as a Makefile for `make -j2`."""
import contextlib, os, shutil, subprocess, tempfile


def make_wide_repo(repo, jobs):
    os.makedirs(repo)
    with open(os.path.join(repo, "slipway.yml"), "w") as f:
        f.write("name: bench-wide\njobs:\n")
        for i in range(1, jobs + 1):
            f.write(f"  j{i}: {{ steps: [ {{ run: /bin/true }} ] }}\n")
    git = ["git", "-C", repo]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "bench"], check=True)


def make_wide_makefile(path, jobs):
    names = " ".join(f"t{i}" for i in range(1, jobs + 1))
    with open(path, "w") as f:
        f.write(f".PHONY: all {names}\nall: {names}\n")
        for i in range(1, jobs + 1):
            f.write(f"t{i}:\n\t/bin/true\n")


@contextlib.contextmanager
def wide_work(prefix, jobs):
    """A temporary directory holding the wide repository (`repo` in it), removed afterwards: (work, repo)."""
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        repo = os.path.join(work, "repo")
        make_wide_repo(repo, jobs)
        yield work, repo
    finally:
        shutil.rmtree(work, ignore_errors=True)
