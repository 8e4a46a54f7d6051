"""labship's job runner, run inside the job's container by `labship run`.

Executes a notebook top to bottom with nbclient (a .py script runs as one cell), with the
parameters injected the papermill way: a cell tagged `injected-parameters` right after the cell
tagged `parameters` (at the top when there is none), replacing one injected before. The
executed notebook is written after every cell (so a failed or timed-out run keeps what ran),
and progress goes to stdout as lines `LABSHIP-JOB {json}` for labship to show (each also has "t", the
seconds since the runner started):

    {"event": "start", "cells": N}
    {"event": "cell", "cell": K, "of": N}                  K counts code cells from 1
    {"event": "failed", "cell": K, "of": N, "ename": ..., "evalue": ...}
    {"event": "timeout", "cell": K, "of": N, "seconds": S}
    {"event": "done", "cells": N}

Usage: python runner.py JOB.json, where JOB.json holds "source" (the notebook or script),
"executed" (where the executed notebook goes), "cwd", "parameters" and
"timeout" (seconds for the whole run; LABSHIP_JOB_END_BY, Unix seconds, ends it earlier when
it comes first: a job host whose pull and inputs took long); "parameters" is a list of
[name, value] pairs, injected in that order. Exit status: 0 every cell ran, 1 a cell failed,
124 the timeout passed, 2 the job could not start.
"""

import json
import os
import sys
import threading
import time

try:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    MISSING = None
except ImportError as e:  # an image without Jupyter's executor: said as the job's failure
    MISSING = e

TAG = "LABSHIP-JOB "
STARTED = time.monotonic()


def emit(**event):
    event["t"] = round(time.monotonic() - STARTED, 3)
    sys.stdout.write(TAG + json.dumps(event) + "\n")
    sys.stdout.flush()


def load(source):
    if source.endswith(".py"):
        with open(source, encoding="utf-8") as f:
            code = f.read()
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb
    return nbformat.read(source, as_version=4)


def inject(nb, parameters):
    """Papermill's way: after the `parameters` cell, a cell of assignments (Python literals)."""
    if not parameters:
        return
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    lines = ["# Parameters"] + ["%s = %r" % (k, v) for k, v in parameters]
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n")
    cell.metadata["tags"] = ["injected-parameters"]
    at = 0
    for i, c in enumerate(nb.cells):
        if "parameters" in c.get("metadata", {}).get("tags", []):
            at = i + 1
            break
    nb.cells.insert(at, cell)


def save(nb, path):
    tmp = path + ".part"
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def time_given(timeout, end_by, now):
    """The job's seconds from `now`: its timeout, or fewer when `end_by` (LABSHIP_JOB_END_BY,
    Unix seconds) comes first."""
    if end_by is None:
        return timeout
    try:
        return max(0, min(timeout, int(float(end_by) - now)))
    except (ValueError, OverflowError):
        print("labship runner: LABSHIP_JOB_END_BY=%r ignored" % end_by, file=sys.stderr)
        return timeout


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    if MISSING is not None:
        emit(event="failed", cell=0, of=0, ename="ImportError",
             evalue="%s: the image needs nbclient and nbformat to run notebooks "
                    "(JupyterLab brings them; or pip install nbclient)" % MISSING)
        return 2
    executed = job["executed"]
    limit = time_given(job["timeout"], os.environ.get("LABSHIP_JOB_END_BY"), time.time())
    try:
        nb = load(job["source"])
        inject(nb, job.get("parameters") or [])
        os.makedirs(os.path.dirname(executed), exist_ok=True)
        os.makedirs(os.path.join(job["cwd"], "outputs"), exist_ok=True)
    except Exception as e:  # an unreadable notebook, a working folder this user cannot write
        emit(event="failed", cell=0, of=0, ename=type(e).__name__, evalue=str(e))
        return 2
    code = {i: n for n, i in enumerate(
        (i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()), start=1)}
    total = len(code)
    current = {"cell": 0}
    # One ending only: the timer's or the main thread's, whichever takes the lock first.
    lock = threading.Lock()
    ended = {"yes": False}

    def started(cell, cell_index, **_):
        if cell_index in code:  # markdown and empty cells are not run
            current["cell"] = code[cell_index]
            emit(event="cell", cell=current["cell"], of=total)

    def executed_cell(cell, cell_index, **_):
        with lock:
            if not ended["yes"]:
                save(nb, executed)

    def out_of_time():
        with lock:
            if ended["yes"]:
                return
            ended["yes"] = True
            emit(event="timeout", cell=current["cell"], of=total, seconds=limit)
            try:
                # Outputs may be arriving meanwhile: the copy saved after the last cell stays
                # should this one fail.
                save(nb, executed)
            except Exception:
                pass
            # The kernel goes with the container: this process is the one its init waits for.
            os._exit(124)

    def finish(**event):
        """The main thread's ending, unless the timer's came first (then it never returns)."""
        with lock:
            if ended["yes"]:
                time.sleep(3600)  # the timer is ending the process
            ended["yes"] = True
            timer.cancel()
            save(nb, executed)
            emit(**event)

    timer = threading.Timer(limit, out_of_time)
    timer.daemon = True
    timer.start()
    kernel = (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=None,
        resources={"metadata": {"path": job["cwd"]}},
        on_cell_start=started,
        on_cell_executed=executed_cell,
    )
    emit(event="start", cells=total)
    try:
        client.execute()
    except CellExecutionError as e:
        finish(event="failed", cell=current["cell"], of=total, ename=e.ename, evalue=e.evalue)
        return 1
    except Exception as e:  # the kernel died or could not start
        finish(event="failed", cell=current["cell"], of=total, ename=type(e).__name__, evalue=str(e))
        return 1
    finish(event="done", cells=total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
