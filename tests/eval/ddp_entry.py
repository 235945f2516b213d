"""`python -m eval.train` for the multi-process tests, run by torchrun as a script:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/eval/ddp_entry.py ARGS

With DDP_TEST_REPORT=FOLDER each rank records, in FOLDER/rank<r>.json, every file it created,
wrote, renamed or removed under DDP_TEST_WATCH (a Python audit hook) and what it printed, and
saves its final model weights to FOLDER/rank<r>.safetensors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _watch(root: str, events: list) -> None:
    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            paths = [path] if any(c in (mode or "") for c in "wax+") or (flags or 0) & WRITE_FLAGS else []
        elif event == "os.rename":  # os.replace too: source and destination
            paths = list(args[:2])
        else:
            paths = [args[0]] if event in ("os.mkdir", "os.remove", "os.rmdir") else []
        for path in paths:
            if isinstance(path, (str, os.PathLike)) and str(path).startswith(root):
                events.append([event, str(path)])
    sys.addaudithook(hook)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from safetensors.torch import save_file

    from eval import train

    rank = int(os.environ["RANK"])
    report = os.environ.get("DDP_TEST_REPORT")
    events: list = []
    if report:
        _watch(os.environ["DDP_TEST_WATCH"], events)
    real_fit = train.fit
    models = []

    def fit(run, cfg, parts, *args, **kwargs):
        models.append(parts.model)
        return real_fit(run, cfg, parts, *args, **kwargs)

    train.fit = fit
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(sys.argv[1:])
    sys.stderr.write(err.getvalue())
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        Path(report, f"rank{rank}.json").write_text(json.dumps(
            {"code": code, "events": events, "stdout": out.getvalue(), "stderr": err.getvalue()}))
        if models:
            save_file({k: v.contiguous() for k, v in models[0].state_dict().items()},
                      str(Path(report, f"rank{rank}.safetensors")))
    return code


if __name__ == "__main__":
    sys.exit(main())
