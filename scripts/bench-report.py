#!/usr/bin/env python3
"""Writes docs/benchmarks.md from the results scripts/bench leaves in docs/bench/.

Each workload's JSON holds its runs with the median run first (umadb-bench --repeat).
"""

import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "docs" / "bench"


def median(name):
    return json.loads((BENCH / f"{name}.json").read_text())[0]


def stolen_range(results):
    """The CPU share stolen by the hypervisor over these runs, where they recorded it."""
    stolen = [r["cpu"]["steal_pct"] for r in results if r.get("cpu")]
    if not stolen:
        return ""
    return f" (CPU stolen {min(stolen):.0f}–{max(stolen):.0f}% per point)"


def runs(name):
    return json.loads((BENCH / f"{name}.json").read_text())


def table(name):
    return (BENCH / f"{name}.md").read_text().strip()


def verdict(ok):
    return "met" if ok else "**not met**"


def main():
    machine = (BENCH / "machine.md").read_text().strip()
    one = median("append-1x1")
    many = median("append-64x1")
    cond = median("append-conditional-64x1")
    head = median("head-64")
    tagged = median("append-boundary-tag-64x1")
    cond_tagged = median("append-conditional-boundary-tag-64x1")
    batch = median("append-8x100")
    batch_grown = median("append-8x100-grown")
    # The store the grown 100-event run began on: the prepopulated events and every event the
    # append runs before it wrote (all their runs, not just the median ones).
    grown_from = 1_000_000 + sum(
        r["events"]
        for name in ("append-1x1", "append-64x1", "append-conditional-64x1")
        for r in runs(name)
    )
    per_run = sum(r["events"] for r in runs("append-8x100-grown")) // len(runs("append-8x100-grown"))
    tags = median("read-tag-query-64")
    scan = median("read-whole-store-1")
    writers_alone = median("append-8x1-alone")
    readers_alone = median("read-whole-store-4-alone")
    mixed = median("mixed-8w-4r")
    growth = runs("growth")
    facts = dict(
        line.strip("|").split("|", 1)
        for line in machine.splitlines()[2:]
        if line.count("|") >= 3
    )
    facts = {k.strip(): v.strip() for k, v in facts.items()}
    per_event = int(facts["store after prepopulating 1,000,000 events"].split("(")[1].split()[0])
    empty_kib = int(facts["new empty store on disk"].split()[0])
    probe_flush = facts["disk: rewrite one 4 KiB page and fdatasync (median of 200)"]
    probe_commit = facts[
        "disk: 12 scattered 4 KiB pages, fdatasync, one O_DSYNC page, like an LMDB commit (median of 200)"
    ]
    probe_loop = facts["CPU: a Python loop of 10,000,000 additions"]
    peak_anon = int(facts["server peak anonymous RSS (its own memory) through the 1M runs"].split()[0])
    # The target's two sizes measured in turn; the curve's points, measured one after another,
    # are shown with it.
    at_1m = median("append-64x1-at-1m")["events_per_sec"]
    at_10m = median("append-64x1-at-10m")["events_per_sec"]
    rates = [g["events_per_sec"] for g in growth]
    write_drop = 1 - mixed["events_per_sec"] / writers_alone["events_per_sec"]
    read_drop = 1 - mixed["readers"]["events_per_sec"] / readers_alone["events_per_sec"]

    rows = [
        ("durable append, 1 event/request, 1 client", "≥ 2,000 events/s", f"{one['events_per_sec']:,.0f} events/s", one["events_per_sec"] >= 2000),
        ("durable append, 1 event/request, 64 clients", "≥ 30,000 events/s", f"{many['events_per_sec']:,.0f} events/s; calls with no storage work (`head`): {head['requests_per_sec']:,.0f}/s", many["events_per_sec"] >= 30000),
        ("conditional append, 64 clients", "within 15% of unconditional", f"{cond['events_per_sec']:,.0f} events/s ({cond['events_per_sec'] / many['events_per_sec'] - 1:+.0%}); each event also carrying a new tag: {cond_tagged['events_per_sec']:,.0f} against {tagged['events_per_sec']:,.0f} ({cond_tagged['events_per_sec'] / tagged['events_per_sec'] - 1:+.0%})", cond["events_per_sec"] >= 0.85 * many["events_per_sec"] and cond_tagged["events_per_sec"] >= 0.85 * tagged["events_per_sec"]),
        ("100 events/request, 8 clients", "≥ 300,000 events/s", f"{batch['events_per_sec']:,.0f} events/s on the prepopulated store; {batch_grown['events_per_sec']:,.0f} on the store grown from {grown_from:,} events", batch["events_per_sec"] >= 300000),
        ("tag-query read, 64 clients", "≥ 15,000 requests/s, p99 < 10 ms", f"{tags['requests_per_sec']:,.0f} requests/s, p99 {tags['p99_ms']:.1f} ms", tags["requests_per_sec"] >= 15000 and tags["p99_ms"] < 10),
        ("whole-store read, 1 client", "≥ 800,000 events/s", f"{scan['events_per_sec']:,.0f} events/s", scan["events_per_sec"] >= 800000),
        ("writes while 4 readers stream the store", "drop ≤ 25%", f"{write_drop:.0%} drop ({writers_alone['events_per_sec']:,.0f} → {mixed['events_per_sec']:,.0f} events/s)", write_drop <= 0.25),
        ("reads while 8 writers append", "drop ≤ 25%", f"{read_drop:.0%} drop", read_drop <= 0.25),
        ("server memory (anonymous RSS) through the 1M runs", "< 100 MB", f"{peak_anon} MiB", peak_anon < 100),
        ("append rate at 10M events vs 1M", "within 10%", f"{at_10m:,.0f} vs {at_1m:,.0f} events/s ({at_10m / at_1m - 1:+.0%}), in turn; the curve's {len(growth)} points, one after another: {rates[0]:,.0f} at 1M, {rates[-1]:,.0f} at 10M, all {min(rates):,.0f}–{max(rates):,.0f}{stolen_range(growth)}", at_10m >= 0.9 * at_1m),
        ("disk per event, 1M prepopulated", "≤ 200 bytes", f"{per_event} bytes", per_event <= 200),
        ("new empty store", "< 1 MB", f"{empty_kib} KiB", empty_kib < 1024),
    ]
    targets = "\n".join(
        ["| target | goal | measured | |", "|---|---|---|---|"]
        + [f"| {a} | {b} | {c} | {verdict(d)} |" for a, b, c, d in rows]
    )

    secs = os.environ.get("SECONDS_PER_RUN", "5")
    doc = f"""# Benchmarks

Figures of the `umadb` server driven over gRPC by `umadb-bench` (in `benches/`), with the
server and the load generator on the same machine, talking over loopback. Every workload is
the median of 3 runs, and so is each point of the growth curve; the sweeps are single runs.
Workloads compared with each other (unconditional and conditional appends; writers alone,
readers alone and both at once) take turns, one run each per round over three rounds, so
that the machine's drift over minutes falls on all of them alike. Each run lasts {secs} seconds (`SECONDS_PER_RUN`, default 5). This
machine is shared and noisy: compare figures taken in one run of the suite with each other,
and treat single figures as indications.

Regenerate everything (about 10 minutes with `SECONDS_PER_RUN=3` on this 2-core machine, longer at
the default 5 s per run; writes `docs/bench/` and this file):

```sh
./scripts/bench
```

The engine's in-process criterion benchmarks are separate:
`cargo bench -p umadb-benches --bench core`.

## Machine and store

{machine}

The disk and CPU rows come from a probe the suite runs in its working directory (see
`scripts/bench`), so that figures taken on different machines can be compared. The targets were
set on a machine whose disk completed an fdatasync in about 0.2 ms. One client's durable append
waits for a commit and a gRPC round trip. Until the journal (`umadb-core/DESIGN.md`, "The
journal"), a commit was four device operations, each waiting for the one before: traced at the
block layer on 2026-12-02 (a machine whose probe gave 0.14 ms and 0.85 s), every one-event
commit issued its data pages in one to three writes, then a flush, the meta page, and a second
flush. An append took 0.57 ms at the median there, a `head` call's round trip 0.08 ms. Now LMDB
writes and flushes its data pages while a second thread writes and flushes the group's journal
record, and the meta page goes to disk with the next commit's flush. Traced again on
2026-12-02 (`append --clients 1 --seconds 3`, a machine whose probe gave 0.14 ms and 0.57 s), a
commit still issued two flushes (14,660 for 7,330 commits) and about 6.6 writes, but the two
flushes run side by side: an append took 0.39 ms at the median, against 0.46 ms for the build
before the journal on the same machine (+14% appends/s, 4 alternating pairs). Since the log
(2026-12-03; `umadb-core/DESIGN.md`, "The log"), a group's commit goes to the page cache and one
flush, of its log record, makes it durable; LMDB's file is flushed at checkpoints, on a thread
of their own, every 500 ms. Alternating runs of the builds with the journal and with the log on
fresh copies of the 1M store, on a slower machine (2026-12-03, 4 pairs): 1 client
(`append --clients 1 --seconds 3`) 1,134–1,417 events/s before, 1,510–2,103 with the log
(medians 1,358 → 2,012, +48%; p50 0.70 → 0.45 ms); 8 clients 7,433–8,724 before, 8,428–11,271
with it (+19% at the medians), p99 1.8–2.3 ms before and 2.3–3.0 ms with checkpoints every
500 ms (3.3–4.9 ms every 100 ms: the checkpoint's flush of the data file holds up the log's
flushes on the same disk while it runs).

Many clients are bound by the CPU instead: the server and the load generator share its two
cores. Profiled on that machine at 64 clients (2026-12-02), an append took about 70 µs of the
machine's CPU time: 16 µs in the load generator, 16 µs in the server's async threads, 19 µs in
the kernel under both (loopback TCP), 8 µs on the writer thread (most of it the kernel writing
and flushing each commit: about 180 µs per commit, with about 20 events in a commit), and the
rest in the C library, the kernel's block workers and idle moments. A `head` call took about
41 µs. In this run, 64 clients calling `Head`, which reads nothing and writes
nothing, made {head['requests_per_sec']:,.0f} calls/s; 64 clients appending one event each made
{many['events_per_sec'] / head['requests_per_sec']:.0%} of that.

Since 2026-12-03 the suite measures the `dist` build (the workspace's `Cargo.toml`): `release`
with fat LTO and one codegen unit, so that the compiler inlines and optimises across the gRPC,
HTTP/2 and tokio crates and ours. The tests build `release`, which links in seconds instead of
minutes. Alternating runs of the server and load generator built both ways (`release`, `dist`,
`dist`, `release`; fresh copies of the 1M store; 3 s each): `head --clients 64`, 4 runs each,
40,995–43,965 → 48,687–52,592 calls/s (medians +17%), CPU per call 20.8–22.1 → 18.2–19.0 µs in
the server and 22.2–23.1 → 18.6–19.6 µs in the load generator; `append --clients 64`, 8 runs
each, medians 19,821 → 23,589 events/s (+19%), the server's CPU per append 40.2–48.8 →
36.1–43.1 µs; `append --clients 8`, 8 runs each at 0–22% steal, medians 5,902 → 8,512;
`read --clients 1` (2 each) 1.90M and 1.90M → 2.32M and 2.50M events/s; tag queries at 64
clients 19,050 and 19,184 → 21,030 and 19,125 requests/s. One client, measured at 20–35% steal,
showed no difference beyond the noise.

## Targets

{targets}

The absolute figures (one client, 64 clients, 100 events per request) depend on the machine
as much as on the store; the others compare runs of one suite with each other. This run's
probe gave {probe_flush}, {probe_commit} and {probe_loop} (fdatasync, an LMDB-like commit,
the Python loop). The run of 2026-12-02, of the build before the log on a machine whose probe
gave 0.17 ms, 0.52 ms and 0.59 s, met all three: 1 client 2,098 events/s, 64 clients 32,178
(`head` 80,755 calls/s), 100 events per request 520,523. A `head` call does no storage work:
its rate, {head['requests_per_sec']:,.0f} calls/s here against 80,755 there, measures the
machine, and 64 clients appending made {many['events_per_sec'] / head['requests_per_sec']:.0%}
of it here against 40% there.

## Workloads

The store is prepopulated with 1,000,000 events (`umadb-bench prepopulate --events 1000000`):
five event types, one tag per event out of 100,000 tags spread evenly over the log, ~100-byte
payloads. Appends of the workloads below add to it, so later tag queries return a few more
than 10 events each. The store's size on disk is the whole directory: it includes the two log
files, 2 MiB each after prepopulating (a checkpoint follows every MiB of records, and a request
of 5,000 events makes a record of about 0.67 MB), about 4 of the bytes per event, and the data
file's growth by the pages the groups between two checkpoints replace (LMDB reuses them only
after the next checkpoint).

A conditional request asks the server to fail it if an event with a tag of the request's own
exists after the client's previous append. It never fails, and the server evaluates it in full.
Its events are the same as those of the unconditional run, so the gap between the two is the
cost of the condition. The `--boundary-tag` pair measures the pattern of a boundary that must
not exist yet (a unique name, say): every event also carries its request's tag, new to the
store, in both runs. Runs before this pair existed gave the conditional run's events that new
tag but not the unconditional run's, so their gap (−23% in the last of them) counted a new tag
per event as well as the condition.

The 100-events-per-request workload appends to the same 10,000 tags of its own (100
neighbouring ones per request), so nearly every one of them gets new positions in each indexing
commit (every 8,192 events), which rewrites each touched tag's open index chunk whole. Chunks
are capped at 256 bytes and the open ones kept apart from the full ones, so what a commit
rewrites stays bounded as the tags' histories grow (format version 3; before it, with
1,900-byte chunks after each tag's older ones, this rate halved between 1M and 6M events: see
`umadb-core/DESIGN.md`). Its target figure is the median of three runs, each on a fresh copy of
the prepopulated store; the same workload is also run where the other appends run, on the store
they have grown (in this run from {grown_from:,} events, each of its runs adding about
{per_run:,}).

In the mixed run, 8 writers append while 4 readers read the whole store over and over; each
side's rate is taken over the time it ran, and a read still going at the deadline stops there,
its events counted. The writers alone and the readers alone are measured the same way. Runs
before this accounting divided the writers' events by the time until the readers' last read
ended, several seconds past the deadline, and counted reads made after the writers stopped.

In the follow runs (since 2026-12-03), writers append one event per request while live
subscriptions, opened at the head before the writers start, follow the store: every subscriber
every event, or (`--own-tag`) subscriber k the tag `follow-k`, which the writers give each event
in turn, so that each event reaches one subscriber and the other 63 stay idle for it. Each event
carries the time its append request left its writer, and the subscribers' p50 and p99 are
delivery latencies from then to the event's arrival, so they include the append's own latency;
their events/s counts deliveries to all subscribers together. Each subscriber checks what it
receives (in order, none missing or repeated, only what it follows), and any departure counts as
an error. With 64 subscribers on tags of their own, an event first took twice as long to reach
its subscriber as its append took: a subscription is woken only by commits holding an event it
matches, so its new range spanned the ~64 positions since its last, more than a read on the
async thread was allowed, and the read went to the read threads, which yield to appends under
load. Now the fanout counts the matching events of each subscription it wakes (`fanout::Wake`),
and a subscription with at most a batch of events to read reads them on the async thread however
many positions the range spans. Alternating runs of the builds before and with it (`follow
--writers 64 --subscribers 64 --own-tag --seconds 3`, fresh copies of the 1M store, 3 rounds):
delivery p50 9.51, 11.02, 8.95 ms → 5.25, 4.64, 4.74 ms, p99 35.5, 76.7, 64.8 → 18.1, 20.2, 17.0
ms, against appends' p50 of 3.8–4.6 ms in all six; the writers' rate unchanged (11,537–14,036
and 12,371–13,828 events/s). With 8 writers and 4 subscribers on every event both builds
delivered within 0.1 ms of the append (p50 1.14–1.27 ms). With 64 subscribers on every event
(`follow --writers 8 --subscribers 64 --seconds 3`, 2026-12-04) the 8 writers made 7,271–7,467
events/s, against 16,767 beside 4 subscribers, and the machine was about a fifth idle (`perf
record -a`, 2 s; no symbol above 2% of it): each commit's events go out in 64 messages, about 10
µs of the server's async threads' time each. With 64 writers the same subscribers got 1.27M
events/s and the writers 19,841. Answering a group's appends before the server's fan-out hears
of the new head (an experiment, not kept) did not help the 8 writers: 7,467 and 7,271 → 7,062
and 6,610 events/s in two alternating rounds.

The journal (2026-12-02) made 8 writers alone faster, not the writers beside readers, so the
writers' drop grew. Alternating runs of the builds before and with it on fresh copies of the
1M store: `append --clients 8 --seconds 3`, 10,289 and 10,477 events/s before, 14,380 and 14,786
with it; `mixed --writers 8 --readers 4 --seconds 3`, writers 6,971–8,058 before and
7,459–7,734 with it, readers 1.98–2.04M and 1.73–1.90M events/s. Alone, a writer waits on the
disk; beside readers, it waits for a core. Thread CPU time over 2 s of the mixed run (in 10 ms
ticks, 400 on two cores): the server's read thread 96, its async threads 72, the writer 38 and
the journal's thread 17; the load generator's readers 105 and its writers 37. The load
generator's readers, at normal priority, are the largest single user of the CPU. Alone, the 8
writers took about 53% of the machine's CPU time (212 of the 400 ticks, server and load
generator together) and the 4 readers about 91% (363): for each side to keep three quarters of
its rate beside the other, the two would need about 1.08 machines at these costs per event.

The read threads' lower priority did not hold for wakeups until 2026-12-02. A scheduler trace
of the mixed run (`perf sched` over 2 s) showed the writer thread, woken on the core where the
server's read thread ran, waiting up to 4.3 ms, one scheduler tick, for the read thread's time
slice to end: Linux's scheduler (EEVDF) lets a running thread keep its core for its slice
whatever the niceness of the thread that wakes. The read threads now yield their core after
each batch. Alternating runs on fresh copies of the 1M store, 7 of each build
(`mixed --writers 8 --readers 4 --seconds 3`): writers 6,908 → 8,184 events/s at the median,
their p99 6.1 → 4.0 ms; readers 1.63M → 1.35M events/s; readers alone unchanged (2.84–2.93M
before, 2.76–2.88M after, 3 pairs). The two sides trade the two cores between them: with the
readers of both the server and the load generator put below every other thread (`SCHED_IDLE`,
an experiment, not a setting), the writers kept 11,827 and 13,324 events/s and the readers fell
to 0.92M and 0.90M. In the trace with the yield, the writer's longest waits are behind the load
generator's readers, which the server does not schedule.

On a slower machine of the same kind (2026-12-03: 8 writers alone 5,289–7,416 events/s, 4
readers alone 1.62–1.84M events/s), a system-wide profile (`perf record -a` over 2 s of each
run) found the machine idle 13.7% of the time with the writers alone and 3.1% with the readers
alone: each side alone keeps both cores busy, and three quarters of each would need about 1.37
machines. Beside each other the writers got 4,236–5,207 events/s and the readers
0.73–1.16M. Where the writers' time goes alone: the server's async threads 27% of the
machine, the load generator's 27%, the writer thread 20% (mostly kernel: submitting the
flushes' I/O, whose notifications to the virtual disk cost exits to the hypervisor), the block
layer's worker 7% and the journal's thread 5%. A group costs two flushes, LMDB's and the
journal's. As a bound on what one flush per group could give (an experiment, not durable:
LMDB's flush at commit turned off, the journal's kept), the writers alone went from
5,289–6,333 to 6,350–9,382 events/s in alternating runs (3 pairs) and their CPU time per event
fell 27% (310 → 226 µs of machine time per event, server and load generator together, in one
profiled pair). A cheaper write lowers the writers' share beside readers only while the writers
alone wait on the disk with cores to spare, as on the faster machine above; where they keep
the cores busy alone, they also go faster alone, and the ratio stays.

One flush per group is what the log (2026-12-03) built. On the slower machine, alternating runs
of the builds with the journal and with the log on fresh copies of the 1M store (3 rounds of
`append --clients 8`, `read --clients 4`, `mixed --writers 8 --readers 4`, 3 s each): writers
alone 6,708–9,276 events/s with the journal, 9,558–12,130 with the log; beside the readers
5,448–6,871 and 7,082–8,191; readers alone 1.68–1.95M and 1.64–2.04M; beside the writers
0.92–1.16M and 0.87–0.91M. At the medians the writers beside readers kept 75% of their rate
alone with the journal and 79% with the log; the readers 59% and 51%. With the log, the 8
writers alone at 9,845 events/s left the machine 37% of the time not running (21% idle, 16%
waiting on the disk; `vmstat 1` in the middle of a 4 s run) and the 4 readers alone 7%: three
quarters of each would need 0.75 × (0.63 + 0.93) = 1.17 machines, down from 1.37 with the
journal. The writers' side of the target held in these runs; the readers' side did not.

Why the readers' side cannot hold at today's cost of an append, measured on the slower machine
(2026-12-03) with the CPU split every run now records (`cpu` in the JSON). The readers alone keep
the machine busy (88.6% busy, 7.9% idle in one run of `read --clients 4`), whatever an event
costs them: cheaper reads raise their rate, not their share. Beside the writers they get what
the writers leave. For them to keep three quarters of their rate, the writers may take about a
quarter of the machine while they run at three quarters of their own rate, that is at most a
third of it alone. Alone, 8 writers keep it 64–71% busy (8,212–8,992 events/s in three runs of
`append --clients 8 --seconds 3`): 145–161 µs of the machine's CPU time per append, server and
load generator together. The same calls without storage work, `head --clients 8`, cost 44–46 µs
each (37,790–43,386 calls/s, the machine saturated). The append's cost falls as groups grow and
the threads park less: 104 µs at 16 clients, 90 µs at 32, 85 µs at 64 (one run each). Where an
append at 8 clients goes (`perf record -a`, 2 s): the writer thread about a quarter of the
machine, most of it in the kernel submitting each group's write and flush to the virtual disk;
the block layer's worker 8%; the server's and the load generator's async threads about half,
spread over h2, tokio and the kernel's loopback TCP with no single large item. Two experiments,
not kept: a writer that waits 100, 200 or 400 µs for a group as large as the one before (as a
commit delay does) lowered the rate (8,820–8,919 → 7,022–7,269, 6,992–7,000 and 5,201–5,513
events/s, two runs each) without lowering the cost per append (132–156 µs); and starting the data
file's writeback every 50 ms between checkpoints (`sync_file_range`) raised the p99 of 8 writers
from 2.5–3.8 ms to 4.1–5.3 ms (three pairs), since each log flush then also flushed data pages
from the disk's cache. Meeting the pair on this machine needs an append that costs less than
half of what it does; the load generator's share of that cost would not be there with the
clients on other machines.

The same accounting on the quiet, faster machine of 2026-12-04 (probe: fdatasync 0.13 ms, the
Python loop 0.54 s; three rounds of `append --clients 8`, `read --clients 4` and `mixed
--writers 8 --readers 4`, 3 s each, fresh copies of the 1M store, the CPU split from the JSON's
`cpu`): the writers alone made 18,073–19,003 events/s with the machine 60–61% busy (16–17%
waiting on the disk, the rest idle), the readers alone 4.63–5.07M events/s at 89–95% busy, and
the writers beside the readers 11,660–12,772. Three quarters of each would take 0.75 × (0.61 +
0.93) = 1.15 machines. An append at 8 clients cost 64–68 µs of the machine's time (its busy
share of two cores over the rate) and a `head` call at 8 clients 20 µs (99,211–101,425 calls/s,
the machine saturated). For the readers to keep three quarters of their rate, the writers at
three quarters of theirs may use a quarter of the machine: 35 µs per append, of which the gRPC
round trip alone takes 20. The storage side of an append, about 45 µs here (mostly the writer
thread's switches and the kernel's write and flush of each small group), would have to cost 15.

At low concurrency a call's cost is mostly its threads parking and waking each other. Counted
with `perf stat -a -e context-switches` over 2 s in the middle of a run (2026-12-03, the
machine of the tables then): `head --clients 1` made 8 switches per call (4,690 calls/s, p50
0.20 ms, the machine 44% busy: about 186 µs of CPU time per call, against 44 µs with 8 clients
keeping it busy), `head --clients 8` 0.4, `append --clients 1` 19 per append and `append
--clients 8` 4.4. On a virtual machine, waking a parked core goes through the hypervisor. The
server with one async worker thread (`TOKIO_WORKER_THREADS=1`, an experiment, not kept) took
`head --clients 1` to 6.5 switches per call (4.0 with the load generator on one worker too;
p50 0.20 → 0.17 ms), but lost elsewhere in two alternating rounds (`--seconds 3` each): 1 client
1,947 and 1,024 → 1,737 and 921 events/s, 8 clients 7,533 and 7,339 → 6,748 and 5,198, tag
queries at 64 clients 205,059 and 197,669 → 169,550 and 168,418 events/s; the mixed run went
both ways (writers 4,321 → 3,616 and 4,980 → 5,775). A scheduler trace of `append --clients
1` (`perf sched record -a`, 0.5 s) shows where the switches come from: each time a parked async
worker of the server or of the load generator is woken (by the socket, or by the writer
answering), it wakes the other worker of its runtime, which finds nothing to do and parks again;
and the writer, woken by the request, writes and flushes with the block layer's worker woken for
the flush. In a profile of the same run (`perf record -a -g`, 2 s), the writer thread spent about
160 µs of CPU time per append, 87 µs of it in `fdatasync` and 50 µs of that submitting the write
to the virtual disk (the notification exits to the hypervisor); the async workers of both
processes together about 400 µs, much of it in waking threads on the other core. A scratch
build serving with one single-threaded runtime per core (two tonic servers on one listening
socket, each spawning its connections on its own thread; not kept) did not show a gain worth its
complexity in two alternating rounds, taken while the hypervisor stole 0–31% of the CPU time:
1 client 735 and 1,112 → 1,346 and 1,369 events/s (the first pair's multi-threaded run lost 19%
to steal), `head --clients 1` 6,295 and 7,088 → 5,424 and 5,565 calls/s with more switches per
call (4.8 and 4.2 → 8.2 and 6.8), 64 clients 21,462 and 18,602 → 22,588 and 17,300 events/s, tag
queries at 64 clients 191,948 and 195,388 → 140,143 and 190,602 events/s, 8 clients 3,702 and
4,611 → 2,768 and 2,805, the mixed run's writers 4,985 and 3,661 → 6,558 and 2,453.

Where one client's append spends its CPU time, per thread (each thread's user and system time
from `/proc` over a whole 3 s run, divided by the calls; 2026-12-03): the server's two async
workers about 65 µs each (130 µs, half of it in the kernel), its writer 130 µs (107 µs in the
kernel: the log's write and flush, waiting for and being woken with a request, waking the async
side with the answer), the load generator 115 µs. A `head` call at one client keeps one server
worker busy, 59 µs, and the load generator 66 µs. An append moves between threads four times
more than a `head` call. A scratch build that committed an append on the async thread that
received it (the first caller to find the writer's state free committed every queued request,
leader and followers; not kept) saved the two hand-offs to the writer thread and back: 1 client
1,481 and 1,591 → 1,741 and 1,849 events/s (server CPU per append 340 and 321 → 270 and 256
µs), but an async thread blocked on a commit holds up the calls queued behind it: 8 clients
10,021 and 7,645 → 6,730 and 6,650, 64 clients 25,273 and 20,719 → 18,943 and 18,301. Committing
on the caller's thread only when no other append was in flight and the last group had been one
append alone, with the writer thread taking everything else, lost at 8 clients as well in three
alternating rounds (9,787, 9,127, 9,920 → 7,990, 9,589, 8,486 events/s) for an uncertain gain at
1 client (1,740, 1,528, 1,557 → 1,652, 2,048, 1,652); not kept either. The same rule with the
writer thread fed by its channel as today (the commit's state behind a mutex the thread and an
inline caller share) passed the tests, and with one client committed everything on the async
thread (the writer thread idle). Measured in rounds of four 2 s runs, today's build and it in
the order A B B A so that the machine's drift falls on both alike: at 1 client (4 rounds) 1,353
→ 1,488 events/s at the medians (+10%; it won 7 of the 8 runs against its neighbour), p50 0.66
→ 0.58 ms, server CPU per append 384 → 312 µs; at 8 clients (3 rounds) −8% to +2% per round;
at 64 clients (2 rounds) 20,852, 21,224, 22,561, 21,317 → 20,487, 20,241, 18,657, 18,844
events/s, lower in both rounds, with more server CPU per append (42–45 → 46–49 µs), which the
thread path it takes there should not cost. Not kept until that loss is understood, and
not without weighing what it couples: an append committed on an async thread holds every other
call on that thread (reads, subscriptions) for the length of its flush, milliseconds on a busy
disk, exactly when appends are sparse.

What the log's flush costs, and two ways around it that did not pay (2026-12-03, scratch builds,
fresh copies of the 1M store, alternating). With the flush skipped altogether (an upper bound,
not durable): 1 client 1,854 → 3,370 events/s, 8 clients 9,877 → 17,756 (server CPU per append
85 → 57 µs), 100 events per request at 8 clients 317,004 → 418,291. Handing each group's flush,
publication and answers to a thread of their own, so that the writer commits the next group
while the last one's flush runs: 8 clients 7,820, 9,378, 8,834, 8,400 → 9,012, 8,686, 8,348,
8,620 events/s, 100 events per request 297,769, 314,216, 348,540, 366,359 → 281,280, 282,136,
383,061, 382,826: no gain. The disk's flushes are the queue either way: a flush covers every
record written before it, so flushing back to back only makes each group smaller. Waiting up to
150 or 400 µs for more requests before committing, when the last group had several (group
commit with a delay for its siblings): 8 clients 10,063 and 8,094 → 6,025 and 5,168 (150 µs),
4,133 and 4,723 (400 µs) events/s, with more server CPU per append (84–102 → 121–140 µs): the
async threads park during the wait and must be woken again.

Reads since 2026-12-03 encode each event from the snapshot where LMDB holds it: the record is
checked (version, checksum, lengths, UTF-8) and borrowed, and its protobuf written from the
borrowed fields (`umadb_proto::borrowed`), where before it was copied into an owned event, then
into a prost message, encoded, and both freed. The server's CPU time per event read, over whole
runs of `read --clients 4 --seconds 3` on fresh copies of the 1M store, alternating with the
build before (3 pairs): 0.563, 0.577 and 0.623 µs → 0.441, 0.458 and 0.456 µs (−21% at the
medians), 1.61–1.69M → 1.87–2.00M events/s. `umadb check` decodes every record the same way:
of the 10M-event store, 10.0–10.3 s → 8.3–9.7 s (3 pairs, page cache warm).

The whole suite was run with the log on that slower machine too (`SECONDS_PER_RUN=3
./scripts/bench`, 2026-12-03; its probe: fdatasync 0.23 ms, an LMDB-like commit 0.81 ms, the
Python loop 0.92 s, against 0.17 ms, 0.52 ms and 0.59 s for the run of 2026-12-02 above). It
gave: 1 client 1,428 events/s; 64 clients 19,495 (`head` 39,965
calls/s), conditional −6%; 100 events per request at 8 clients 245,974; tag queries 17,356
requests/s, p99 8.1 ms; whole-store read 1,548,304 events/s; writers beside readers 7,441 →
5,073 events/s (−32%), readers −48%; 180 bytes per event prepopulated; a new store 88 KiB (the
log files are made at the first opening); server anonymous RSS 58 MiB; appends at 10M against
1M in turn +4%, while the curve taken in one pass went from 24,469 at 1M through 19,000–20,000
between 5M and 9M to 12,870 at 10M. The in-turn runs on fresh copies did not show it, and a
second pass of the curve on that machine (2026-12-03, `growth --max-events 10000000 --step
1000000 --clients 64 --seconds 3 --repeat 3`, with `vmstat 5` beside it) put it down to the
machine, not the store: 21,738 events/s at 1M, 20,055–21,545 to 4M, then 13,985, 8,870 and
12,158 at 5M–7M while the hypervisor stole 14–30% of the CPU time (steal; 0–7% before and
after), and 23,287, 20,781 and 20,662 at 8M–10M. Every run now records how the machine's CPU
time went during it (busy, idle, waiting on the disk, stolen: `cpu` in the JSON, from
`/proc/stat`), and the tables it writes show the stolen share, so that a dip of this kind shows
as such.

| workload | command |
|---|---|
| append, 1 client | `umadb-bench --repeat 3 append --clients 1 --seconds {secs}` |
| append, 64 clients | `umadb-bench append --clients 64 --seconds {secs}`, in turn with the next two, 3 rounds |
| conditional append, 64 clients | `umadb-bench append --clients 64 --seconds {secs} --conditional` |
| calls that do no storage work, 64 clients | `umadb-bench head --clients 64 --seconds {secs}` |
| the two appends above, each event also carrying its request's new tag | `... append --clients 64 --seconds {secs} --boundary-tag` and `... --boundary-tag --conditional`, in turn, 3 rounds |
| 100 events per request, 8 clients | `umadb-bench append --clients 8 --events-per-request 100 --seconds {secs}`, three times, each on a fresh copy of the prepopulated store; and `--repeat 3` on the grown store |
| tag-query reads, 64 clients | `umadb-bench --repeat 3 read --clients 64 --tag-query --seconds {secs}` |
| whole-store read, 1 client | `umadb-bench --repeat 3 read --clients 1 --seconds {secs}` |
| subscription catching up from the start, 1 client | `umadb-bench --repeat 3 read --clients 1 --catch-up --seconds {secs}` |
| writers alone / readers alone / both | `append --clients 8`, `read --clients 4`, `mixed --writers 8 --readers 4`, in turn, 3 rounds |
| live subscriptions: 8 writers, 4 subscribers following every event | `umadb-bench --repeat 3 follow --writers 8 --subscribers 4 --seconds {secs}` |
| live subscriptions: 64 writers, 64 subscribers each following a tag of its own | `umadb-bench --repeat 3 follow --writers 64 --subscribers 64 --own-tag --seconds {secs}` |
| append rate at 1M against 10M events | `append --clients 64 --seconds {secs}` on a fresh copy of each store in turn, 5 rounds (see the growth section) |

{table("append-1x1")}
{table("append-64x1").splitlines()[-1]}
{table("append-conditional-64x1").splitlines()[-1]}
{table("head-64").splitlines()[-1]}
{table("append-boundary-tag-64x1").splitlines()[-1]}
{table("append-conditional-boundary-tag-64x1").splitlines()[-1]}
{table("append-8x100").splitlines()[-1]}
{table("append-8x100-grown").splitlines()[-1].replace("| append |", "| append, grown store |", 1)}
{table("read-tag-query-64").splitlines()[-1]}
{table("read-whole-store-1").splitlines()[-1]}
{table("read-catch-up-1").splitlines()[-1]}
{table("append-8x1-alone").splitlines()[-1]}
{table("read-whole-store-4-alone").splitlines()[-1]}
{chr(10).join(table("mixed-8w-4r").splitlines()[2:])}
{chr(10).join(table("follow-8w-4s").splitlines()[2:])}
{chr(10).join(table("follow-own-tag-64w-64s").splitlines()[2:])}

## The Python client

Applications built on eventsourcing call the blocking `umadb.Client` of the Python package from
Python threads. `.venv/bin/python benches/python/client.py --url ... --seconds {secs}`, on a fresh
copy of the prepopulated store, makes the calls one after another from one thread: `head`
(no storage work), `append` (one event with a uuid), `tag-query` (every event of one tag, about
10), `decide` (the cycle of a command: read a tag's events, then append one event on condition
that nothing matching arrived since) and `scan` (iterating the store from its first event, up to
1,000,000 events):

{table("python-client")}

Since 2026-12-02 a read's steps run on the calling thread instead of as tasks of the package's
tokio runtime, which cost two thread wake-ups a step even when the batch had arrived already.
Measured in alternating pairs against the build before (one thread, the same server): a
tag-query read 0.29–0.35 → 0.21–0.22 ms at the median, iterating the store 1.07–1.25M →
1.84–1.91M events/s; `head` and `append` unchanged.

The package's runtime keeps one worker thread per core. With one worker in all
(`TOKIO_WORKER_THREADS=1`, an experiment of 2026-12-04, not kept; the same server, alternating
runs of the default and one worker, 3,000 calls or 2 s each), one thread's `append` had a lower
median, 0.383, 0.423 and 0.400 → 0.333, 0.346 and 0.315 ms, but not a higher rate in separate
runs (2,116–2,436 → 2,251–2,388 appends/s: its mean call no shorter); 8 threads appending made
11,916–13,896 → 11,774–13,442 appends/s, 32 threads 23,328–24,586 → 21,935–23,177, and 32
concurrent appends through one `AsyncClient` 14,700–15,558 → 11,940–12,125. The second worker
stays.

## Sweeps over clients

`umadb-bench sweep --workload append --max-clients 256 --seconds {secs}` (and `append-conditional`,
`read-tag-query`):

{table("append")}

![append throughput](bench/append-throughput.png)
![append latency](bench/append-latency.png)

{table("append-conditional")}

![conditional append throughput](bench/append-conditional-throughput.png)
![conditional append latency](bench/append-conditional-latency.png)

{table("read-tag-query")}

![tag query throughput](bench/read-tag-query-throughput.png)
![tag query latency](bench/read-tag-query-latency.png)

## Append rate against store size

`umadb-bench --repeat 3 growth --max-events 10000000 --step 1000000 --clients 64 --seconds {secs}` on a fresh
store: prepopulate to each size, then 64 clients append for {secs} seconds, three times; the
median run is shown.

{table("growth")}

![append rate against store size](bench/growth.png)

The points are measured one after another over several minutes, so the machine's drift in that
time falls between the first point and the last. The target's figure compares the two sizes in
turn instead: five rounds, each running `umadb-bench append --clients 64 --seconds {secs}` on a
fresh copy of the 1,000,000-event store and then on a fresh copy of the store the curve left
(10,000,000 events plus the curve's appends); each size gets the median of its five runs.

On the 1,000,000-event store:

{table("append-64x1-at-1m")}

On the store the curve left:

{table("append-64x1-at-10m")}
"""
    (ROOT / "docs" / "benchmarks.md").write_text(doc)
    print(targets)


if __name__ == "__main__":
    sys.exit(main())
