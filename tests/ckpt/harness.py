"""What the checkpoint tests share: running fp8c and reporting one PASS/FAIL line per case."""
import subprocess


def runner(fp8c):
    """run(*args) -> (exit status, stdout, stderr) of `fp8c args...`."""
    def run(*args):
        p = subprocess.run([fp8c, *args], capture_output=True, text=True, errors="replace")
        return p.returncode, p.stdout, p.stderr
    return run


def case(name, fn, limit=1500):
    """Runs fn(); PASS, or FAIL with the assertion (a crash of the test itself is a failure too)."""
    try:
        fn()
        print("PASS", name)
    except AssertionError as e:
        print("FAIL %s: %s" % (name, str(e)[:limit]))
    except Exception as e:
        print("FAIL %s: %s: %s" % (name, type(e).__name__, str(e)[:limit]))
