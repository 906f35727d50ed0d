"""Load test of the classroom hub: several simulated students working at once (as root, loopback only).

``python -m benchmarks.hub_load --students 4`` starts the classroom hub
(``python -m instructor_tools hub``'s configuration, ``classroom/``) on 127.0.0.1 with throw-away
accounts, starts every student's server at the same time, then has each student run
notebook 01 (the solutions, as a student who has done it) top to bottom in their own
``tl-workshop`` kernel through the hub, all at once, each inside the per-student limits.

Measured: how long the servers take to be ready together; each student's wall time
for the notebook; each student's peak memory and CPU-seconds from their control group
(server + kernel, what the limits apply to); the hub's and the proxy's own memory; and
the machine's memory in use at the peak. Everything stops at ``--deadline`` seconds,
and the hub, the servers, the kernels and the accounts are removed however the run ends.
Results go to ``benchmarks/hub_load.json`` (with the machine's cores and memory), and the
instructor guide's sizing table is computed from them and the notebooks' kernel costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, now

ASSIGNMENT = "01_pretrained_scoring"
BASE = Path("/tmp/kit-hub-load")
OUT = ROOT / "benchmarks" / "hub_load.json"


def _request(url: str, token: str, method: str = "GET", body: Any = None, timeout: float = 120) -> Any:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"token {token}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


async def run_notebook(base: str, token: str, path: str, cells: list[str], deadline: float) -> dict[str, Any]:
    """Run ``cells`` one after the other in a new kernel of the session for ``path``; returns timing and status."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    session = await asyncio.to_thread(
        _request, f"{base}api/sessions", token, "POST",
        {"path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": "tl-workshop"}},
    )
    kernel_id = session["kernel"]["id"]
    ws_url = base.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    connection = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    began, status, failed_cell = time.perf_counter(), "ok", None
    client_session = uuid.uuid4().hex
    try:
        for index, code in enumerate(cells):
            msg_id = uuid.uuid4().hex
            connection.write_message(json.dumps({
                "header": {"msg_id": msg_id, "username": "load-test", "session": client_session, "msg_type": "execute_request",
                           "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            }))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(connection.read_message(), timeout=remaining)
                if message is None:
                    raise ConnectionError("the kernel's websocket closed (kernel died: out of memory?)")
                reply = json.loads(message)
                if reply.get("parent_header", {}).get("msg_id") == msg_id and reply.get("msg_type") == "execute_reply":
                    break
            if reply["content"].get("status") != "ok":
                status, failed_cell = "error", f"cell {index}: {reply['content'].get('ename')}: {reply['content'].get('evalue', '')[:200]}"
                break
    except TimeoutError:
        status = "deadline"
    except ConnectionError as error:
        status, failed_cell = "kernel died", str(error)
    finally:
        connection.close()
    return {"seconds": round(time.perf_counter() - began, 1), "status": status, "error": failed_cell}


async def _sample(groups: dict[str, Any], stop: asyncio.Event, samples: list[dict[str, float]]) -> None:
    import psutil

    while not stop.is_set():
        used = {name: (group.usage().get("memory_mib") or 0.0) for name, group in groups.items()}
        samples.append({"t": time.monotonic(), "students_mib": sum(used.values()),
                        "machine_used_mib": (psutil.virtual_memory().total - psutil.virtual_memory().available) / 2**20})
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass


def measure(students: int, profile: str, deadline_s: float, shared: Path) -> dict[str, Any]:
    """Start the hub, run the class, measure; always clean up. Returns the results."""
    import psutil

    from instructor_tools.course import submissions
    from instructor_tools.isolation import cgroups
    from instructor_tools.serving import hub

    if os.geteuid() != 0:
        raise SystemExit("the load test creates Unix accounts and runs servers as them: run it as root")
    names = [f"kit-load-{i:02d}" for i in range(1, students + 1)]
    instructor = "kit-load-teacher"
    state = BASE / "state"
    if (state / "hub.json").is_file():
        hub.stop(state, remove_users=True)
    hub.remove_accounts([instructor, *names])
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir(parents=True)
    os.chmod(BASE, 0o755)
    roster = BASE / "roster.csv"
    roster.write_text("username,role\n" + f"{instructor},instructor\n" + "".join(f"{n},student\n" for n in names))
    modes = {folder: os.stat(folder).st_mode & 0o7777 for folder in hub.unreachable_folders()}
    for folder, mode in modes.items():
        os.chmod(folder, mode | 0o001)  # the environment's Python must be reachable by the students (restored below)
    solution = submissions.solution_submission(ASSIGNMENT, ROOT)
    cells = [cell.source for cell in solution.cells if cell.cell_type == "code" and cell.source.strip()]
    result: dict[str, Any] = {"date": now(), "students": students, "profile": profile, "notebook": ASSIGNMENT,
                              "machine": {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
                              "limits": hub.DEFAULT_LIMITS["student"]}
    try:
        began = time.perf_counter()
        running = hub.start(
            roster, state_dir=state, exchange=BASE / "exchange", ip="127.0.0.1", port=_free_port(),
            home_base=BASE / "home", profile=profile,
            kit={"KIT_WEIGHTS_MIRROR": str(shared / "keras_home" / "models"), "KIT_DATA_DIR": str(shared / "datasets"),
                 "KIT_BACKBONE": "mobilenet", "KIT_ALPHA": "0.75"},
        )
        result["hub_start_s"] = round(time.perf_counter() - began, 1)
        tokens = {n: running.api(f"users/{n}/tokens", "POST", {"note": "load test", "expires_in": 3600})["token"] for n in names}
        began = time.perf_counter()
        for name in names:
            running.api(f"users/{name}/server", "POST")
        pending = set(names)
        while pending and time.perf_counter() - began < 300:
            pending -= {n for n in pending if (running.api(f"users/{n}")["servers"].get("") or {}).get("ready")}
            time.sleep(0.5)
        if pending:
            raise RuntimeError(f"servers not ready after 300 s: {sorted(pending)}")
        result["servers_ready_s"] = round(time.perf_counter() - began, 1)
        idle = {g.name: g.usage() for g in cgroups.groups() if g.name in names}
        result["idle_server_mib"] = round(sum(u["memory_mib"] or 0 for u in idle.values()) / len(names), 1)
        for name in names:  # each student's copy of the notebook, where its kernel runs
            base = f"{running.url}user/{name}/"
            _request(f"{base}api/contents/{ASSIGNMENT}", tokens[name], "PUT", {"type": "directory"})
            _request(f"{base}api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb", tokens[name], "PUT",
                     {"type": "notebook", "format": "json", "content": json.loads(json.dumps(solution))})
        groups = {g.name: g for g in cgroups.groups() if g.name in names}

        async def the_class() -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
            stop, samples = asyncio.Event(), []
            sampler = asyncio.create_task(_sample(groups, stop, samples))
            deadline = time.monotonic() + deadline_s
            runs = await asyncio.gather(*[
                run_notebook(f"{running.url}user/{n}/", tokens[n], urllib.parse.quote(f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb"), cells, deadline)
                for n in names
            ])
            stop.set()
            await sampler
            return runs, samples

        began = time.perf_counter()
        runs, samples = asyncio.run(the_class())
        result["class_wall_s"] = round(time.perf_counter() - began, 1)
        usage = {name: group.usage() for name, group in groups.items()}
        result["per_student"] = [
            {"student": name, **run, "peak_mib": usage[name]["peak_mib"], "cpu_s": usage[name]["cpu_s"]}
            for name, run in zip(names, runs)
        ]
        result["peak_students_mib"] = round(max(s["students_mib"] for s in samples), 1) if samples else None
        result["peak_machine_used_mib"] = round(max(s["machine_used_mib"] for s in samples), 1) if samples else None
        hub_processes = [psutil.Process(running.pid())] + psutil.Process(running.pid()).children()
        result["hub_and_proxy_mib"] = round(sum(p.memory_info().rss for p in hub_processes if p.uids().real == 0) / 2**20, 1)
    finally:
        hub.stop(state, remove_users=True)
        for folder, mode in modes.items():
            os.chmod(folder, mode)
        shutil.rmtree(BASE, ignore_errors=True)
    return result


#: Machines of the sizing table: (cores, GiB of memory).
MACHINES = ((4, 16), (8, 32), (16, 64), (32, 128), (64, 256))
RESERVED_GIB = 2.0  # the system, the hub and its proxy (the hub and proxy measured under 0.2 GiB)
COMPUTE_WINDOW_S = 600.0  # the whole class runs the heaviest notebook's compute within 10 minutes


def kernel_costs(*results_files: Path) -> dict[str, dict[str, Any]]:
    """Workshop-profile kernel peak memory and CPU-seconds per notebook, from notebook benchmark results.

    Later files win for a notebook they ran successfully (``python -m benchmarks --only notebooks``).
    """
    costs: dict[str, dict[str, Any]] = {}
    for path in results_files:
        rows = json.loads(Path(path).read_text())["sections"]["notebooks"]["profiles"]["workshop"]["notebooks"]
        for row in rows:
            if row["status"] == "ok" and row.get("peak_mib") is not None:
                costs[row["notebook"]] = {k: row[k] for k in ("peak_mib", "cpu_s", "seconds", "date")}
    return dict(sorted(costs.items()))


def sizing_table(costs: dict[str, dict[str, Any]], idle_server_mib: float) -> list[str]:
    """Markdown: students per server for each machine of :data:`MACHINES`, with the assumptions used."""
    memory = max(c["peak_mib"] for c in costs.values()) + idle_server_mib
    heaviest = max(costs, key=lambda n: costs[n]["cpu_s"])
    cpu = costs[heaviest]["cpu_s"]
    per_core = COMPUTE_WINDOW_S / cpu
    lines = [
        "| server | students (memory) | students (CPU) | **students** |",
        "|---|---|---|---|",
    ]
    for cores, gib in MACHINES:
        by_memory = int((gib - RESERVED_GIB) * 1024 // memory)
        by_cpu = int(cores * per_core)
        lines.append(f"| {cores} cores, {gib} GiB | {by_memory} | {by_cpu} | **{min(by_memory, by_cpu)}** |")
    lines += [
        "",
        f"Per student: {memory / 1024:.1f} GiB at the peak (the heaviest notebook's kernel, "
        f"{max(c['peak_mib'] for c in costs.values()):.0f} MiB, plus an idle JupyterLab server, {idle_server_mib:.0f} MiB), "
        f"and {cpu:.0f} CPU-seconds for the heaviest notebook ({heaviest}), "
        f"so {per_core:.1f} students per core when the whole class runs it within {COMPUTE_WINDOW_S / 60:.0f} minutes; "
        f"{RESERVED_GIB:.0f} GiB kept for the system, the hub and its proxy.",
    ]
    return lines


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hub_load", description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=4, help="simulated students at once (default 4)")
    parser.add_argument("--profile", default="workshop", help="the kit's profile of every kernel (default workshop)")
    parser.add_argument("--deadline", type=float, default=420, help="seconds the class may run in all (default 420)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="course data folder")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    parser.add_argument(
        "--costs", type=Path, nargs="*", default=[],
        help="results.json files of `python -m benchmarks --only notebooks --profiles workshop` runs: their kernel "
        "costs go into the results and the sizing table",
    )
    parser.add_argument("--table-only", action="store_true", help="print the sizing table from --out, run nothing")
    args = parser.parse_args(argv)
    if args.students < 1:
        parser.error("--students must be at least 1")
    if args.table_only:
        result = json.loads(args.out.read_text())
        print("\n".join(sizing_table(result["kernel_costs"], result["idle_server_mib"])))
        return 0
    result = measure(args.students, args.profile, args.deadline, args.shared)
    if args.costs:
        result["kernel_costs"] = kernel_costs(*args.costs)
        print("\n".join(sizing_table(result["kernel_costs"], result["idle_server_mib"])))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if all(s["status"] == "ok" for s in result.get("per_student", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
