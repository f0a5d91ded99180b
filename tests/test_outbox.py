"""The durable outbox: order, durability across reopen and process death, coalescing, thread safety."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox, OutboxLimits, enqueue

ROOT = Path(__file__).resolve().parents[1]


def test_order_and_mark_sent(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ids = [ob.put(f"t/{i}", f"p{i}".encode()) for i in range(10)]
        assert ids == sorted(ids)
        assert ob.pending_count() == 10
        assert [r.topic for r in ob.next_batch(4)] == ["t/0", "t/1", "t/2", "t/3"]
        assert ob.next_batch(4) == ob.next_batch(4)  # reading does not consume
        assert [r.id for r in ob.next_batch(3, after_id=ids[5])] == ids[6:9]  # skip what is in flight
        assert ob.mark_sent(ids[1]) and not ob.mark_sent(ids[1])
        assert ob.mark_sent_many([ids[0], ids[2], 999_999]) == 2
        rows = ob.next_batch(100)
        assert [r.payload for r in rows] == [f"p{i}".encode() for i in range(3, 10)]
        assert (rows[0].qos, rows[0].retain) == (1, False)
        assert ob.pending_count() == 7


def test_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    ids = ob.put_many([(f"t/{i}", bytes([i]) * 1000) for i in range(5)])
    ob.mark_sent(ids[0])
    ob.close()
    ob = Outbox(path)
    rows = ob.next_batch(10)
    assert [r.id for r in rows] == ids[1:]
    assert [r.payload for r in rows] == [bytes([i]) * 1000 for i in range(1, 5)]
    ob.mark_sent_many(ids[1:])
    ob.close()
    ob = Outbox(path)
    assert ob.put("t/new", b"x") > max(ids)  # ids never come back, even from an emptied table
    ob.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ob.put("t", b"x")
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_survives_process_kill(tmp_path: Path) -> None:
    """Whatever put() returned for is on disk, even if the process dies right after (SIGKILL)."""
    path = tmp_path / "o.db"
    code = ("import sys, time\nfrom edge.outbox import Outbox\nob = Outbox(sys.argv[1])\n"
            "for i in range(10_000):\n    print(ob.put('t/k', str(i).encode()), flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None
    returned = [int(proc.stdout.readline()) for _ in range(50)]
    proc.kill()
    proc.wait()
    with Outbox(path) as ob:
        stored = [r.id for r in ob.next_batch(100_000)]
    assert stored[:50] == returned
    assert stored == sorted(stored)


def test_put_many_is_all_or_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        with pytest.raises(ValueError):
            ob.put_many([("a", b"1"), ("b/#", b"2")])
        assert ob.pending_count() == 0
        assert len(ob.put_many([("a", b"1"), ("b", b"2", 1, False)])) == 2


def test_retained_coalesce_per_topic(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ob.put("s/cam1", b"online", retain=True)
        ob.put("inc", b"1")
        ob.put("s/cam2", b"online", retain=True)
        ob.put("s/cam1", b"offline", retain=True)
        ob.put("s/cam1", b"online", retain=True)
        ob.put("s/cam1", b"not retained")
        rows = ob.next_batch(10)
        assert [(r.topic, r.payload, r.retain) for r in rows] == [
            ("inc", b"1", False), ("s/cam2", b"online", True), ("s/cam1", b"online", True),
            ("s/cam1", b"not retained", False)]


@pytest.mark.parametrize("args, expectation", [
    (("a/b", b"x"), does_not_raise()),
    (("a/b", bytearray(b"x")), does_not_raise()),
    (("a/b", b""), does_not_raise()),
    (("a/b", b"x", 2), does_not_raise()),
    (("", b"x"), pytest.raises(ValueError, match="non-empty")),
    (("a/+/b", b"x"), pytest.raises(ValueError, match="wildcard")),
    (("a/#", b"x"), pytest.raises(ValueError, match="wildcard")),
    (("a/b", "text"), pytest.raises(TypeError, match="bytes")),
    (("a/b", b"x", 0), pytest.raises(ValueError, match="qos")),
])
def test_put_refuses_what_could_never_be_sent(tmp_path: Path, args: tuple[Any, ...], expectation: Any) -> None:
    with Outbox(tmp_path / "o.db") as ob, expectation:
        ob.put(*args)


def test_threads_share_one_outbox(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    n_threads, per_thread = 4, 40

    def producer(k: int) -> None:
        for i in range(per_thread):
            ob.put(f"t/{k}", f"{k}:{i}".encode())

    sent: list[bytes] = []
    stop = threading.Event()

    def consumer() -> None:
        while not stop.is_set() or ob.pending_count():
            rows = ob.next_batch(7)
            sent.extend(r.payload for r in rows)
            ob.mark_sent_many([r.id for r in rows])
            if not rows:
                ob.wait(0.01)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    cons = threading.Thread(target=consumer)
    cons.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    cons.join(10)
    assert len(sent) == len(set(sent)) == n_threads * per_thread
    for k in range(n_threads):  # each producer's messages in its own order
        mine = [int(p.split(b":")[1]) for p in sent if p.startswith(f"{k}:".encode())]
        assert mine == list(range(per_thread))
    ob.close()


def test_enqueue_commits_with_the_callers_transaction(tmp_path: Path) -> None:
    """The incident book writes its state and the outbox rows in one transaction on its own connection."""
    path = tmp_path / "state.db"
    ob = Outbox(path)
    book = sqlite3.connect(path, isolation_level=None)
    book.execute("CREATE TABLE incident (id TEXT)")
    book.execute("BEGIN IMMEDIATE")
    book.execute("INSERT INTO incident VALUES ('a')")
    enqueue(book, [("t/1", b"opened a")])
    book.execute("ROLLBACK")  # a failed update: neither the state nor the message exists
    assert ob.pending_count() == 0
    book.execute("BEGIN IMMEDIATE")
    book.execute("INSERT INTO incident VALUES ('a')")
    ids = enqueue(book, [("t/1", b"opened a"), ("s/1", b"on", 1, True)])
    book.execute("COMMIT")
    assert [(r.id, r.payload) for r in ob.next_batch(5)] == list(zip(ids, [b"opened a", b"on"]))
    with pytest.raises(ValueError):
        enqueue(book, [("t/#", b"x")])
    book.close()
    ob.close()


# ------------------------------------------------------------------------------------ limits and drop policy
def _event(kind: str, n: int, pad: int = 0) -> tuple[str, bytes]:
    return ("cityops/e1/incident/cam0", f'{{"message_id":"m{n}","event":"{kind}","x":"{"A" * pad}"}}'.encode())


def _fill(ob: Outbox) -> dict[str, list[int]]:
    """3 opened, 4 updated, 2 evidence, 1 resolved, 2 statuses (retained, different topics), interleaved."""
    ids: dict[str, list[int]] = {"opened": [], "updated": [], "resolved": [], "evidence": [], "status": []}
    plan = ["opened", "updated", "evidence", "updated", "opened", "status", "updated", "resolved", "evidence",
            "updated", "opened", "status"]
    for n, kind in enumerate(plan):
        if kind == "evidence":
            item: tuple[str, bytes] | tuple[str, bytes, int, bool] = (f"cityops/e1/evidence/i{n}", b"\xff\xd8jpeg")
        elif kind == "status":
            item = (f"cityops/e1/camera/cam{n}/status", b'{"state":"online"}', 1, True)
        else:
            item = _event(kind, n)
        ids[kind].append(ob.put_many([item])[0])
    return ids


def test_cap_drops_statuses_then_updates_then_evidence_never_a_case_first(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", OutboxLimits(max_messages=5)) as ob:
        ids = _fill(ob)
        dropped = ob.prune()
        assert dropped == {"status": 2, "updated": 4, "evidence": 1}
        left = [r.id for r in ob.next_batch(100)]
        assert left == sorted(ids["opened"] + ids["resolved"] + ids["evidence"][1:])  # the oldest evidence went
        assert ob.prune() == {}  # within the limits: nothing more
        ob.limits = OutboxLimits(max_messages=2)
        assert ob.prune() == {"evidence": 1, "opened/resolved/reply": 2}  # only cases left: the oldest go
        assert [r.id for r in ob.next_batch(100)] == [ids["resolved"][0], ids["opened"][2]]
        assert ob.drop_counts() == {"status": 2, "updated": 4, "evidence": 2, "opened/resolved/reply": 2}
    with Outbox(tmp_path / "o.db") as ob:  # the counts are in the file: the status after a restart still has them
        assert ob.drop_counts()["updated"] == 4


def test_size_cap_counts_bytes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", OutboxLimits(max_mb=0.01)) as ob:  # 10,485 bytes
        opened = ob.put_many([_event("opened", 0, pad=4000)])
        ob.put_many([_event("updated", i, pad=4000) for i in range(1, 4)])
        assert ob.prune() == {"updated": 2}  # 4 x ~4 KB: two updates go, the opened stays
        assert ob.next_batch(1)[0].id == opened[0] and ob.pending_count() == 2


def test_age_drops_updates_and_statuses_never_cases(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", OutboxLimits(max_age_h=1.0)) as ob:
        ids = _fill(ob)
        assert ob.prune() == {}
        later = time.time() + 2 * 3600
        assert ob.prune(now=later) == {"status": 2, "updated": 4, "evidence": 2}
        assert [r.id for r in ob.next_batch(100)] == sorted(ids["opened"] + ids["resolved"])


def test_book_rows_through_enqueue_are_classified(tmp_path: Path) -> None:
    """Rows the incident book writes on its own connection get the same drop class."""
    path = tmp_path / "o.db"
    with Outbox(path, OutboxLimits(max_messages=1)) as ob:
        conn = sqlite3.connect(str(path))
        with conn:
            enqueue(conn, [_event("opened", 1), _event("updated", 2)])
        conn.close()
        assert ob.prune() == {"updated": 1}


def test_an_outbox_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT "
                 "NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_at REAL NOT NULL)")
    conn.execute("INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES ('t/a', x'00', 1, 0, 0)")
    conn.commit()
    conn.close()
    with Outbox(path) as ob:
        assert [r.topic for r in ob.next_batch(5)] == ["t/a"]  # kept, deliverable
        ob.put("t/b", b"1")
        assert ob.pending_count() == 2 and ob.prune() == {}


def test_set_aside_and_requeue(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        a, b = ob.put("t/a", b"a"), ob.put("t/b", b"b")
        assert ob.set_aside(a, "0x87 Not authorized") and not ob.set_aside(a, "again")
        assert [r.topic for r in ob.next_batch(5)] == ["t/b"]
        assert ob.set_aside_rows() == [(a, "t/a", "0x87 Not authorized")]
        assert ob.requeue_set_aside() == 1 and ob.set_aside_rows() == []
        assert [r.topic for r in ob.next_batch(5)] == ["t/b", "t/a"] and b < ob.next_batch(5)[1].id
