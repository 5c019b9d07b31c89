"""The worker lease on the real server: concurrent first acquires, takeover, release."""

from __future__ import annotations

import threading
from datetime import timedelta

from alerts.lease import Lease


def test_two_concurrent_first_acquires_by_one_holder_both_hold_the_lease(mongo_client, db_names):
    # The lease job and the first evaluation run together at start-up; an upsert race
    # must not make the holder believe it lost the lease it has just taken.
    for attempt in range(10):
        db = mongo_client[f"{db_names[1]}_race{attempt}"]
        lease = Lease(db, timedelta(seconds=30), holder="worker-a")
        held = []
        threads = [threading.Thread(target=lambda: held.append(lease.acquire())) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert held == [True, True]
        assert lease.check()
        assert db.leases.find_one({"_id": "alerts-worker"})["fence"] == 1
        mongo_client.drop_database(db.name)


def test_a_second_holder_waits_until_the_lease_is_released(mongo_client, db_names):
    db = mongo_client[db_names[1]]
    first = Lease(db, timedelta(seconds=30), holder="worker-a")
    second = Lease(db, timedelta(seconds=30), holder="worker-b")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    assert second.fence == first.fence + 1
    assert not first.check()


def test_a_dropped_lease_is_not_used_until_it_is_acquired_again(mongo_client, db_names):
    # What the worker does when a newer leader's fence refused its write.
    lease = Lease(mongo_client[db_names[1]], timedelta(seconds=30), holder="worker-a")
    assert lease.acquire() and lease.held
    lease.drop()
    assert not lease.held and not lease.check()
    assert lease.acquire() and lease.check()
