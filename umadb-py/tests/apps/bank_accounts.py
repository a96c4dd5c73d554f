"""An aggregate-based eventsourcing application (notification log included), configured only by
the environment (PERSISTENCE_MODULE=eventsourcing_umadb, UMADB_URI)."""

from __future__ import annotations

from decimal import Decimal

from eventsourcing.domain import triggers
from eventsourcing.pydantic import Aggregate, AggregatesApplication, Decision


class Account(Aggregate):
    class Opened(Decision):
        owner: str

    class Credited(Decision):
        amount: Decimal

    @triggers(Opened)
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = Decimal("0")

    @triggers(Credited)
    def credit(self, amount: Decimal) -> None:
        self.balance += amount


class Bank(AggregatesApplication):
    def open_account(self, owner: str) -> str:
        account = Account(owner=owner)
        self.save(account)
        return str(account.id)

    def credit(self, account_id: str, amount: Decimal) -> None:
        account = self.repository.get(account_id, Account)
        account.credit(amount)
        self.save(account)

    def balance(self, account_id: str) -> Decimal:
        return self.repository.get(account_id, Account).balance


if __name__ == "__main__":
    import os

    from eventsourcing.persistence import IntegrityError

    assert os.environ["PERSISTENCE_MODULE"] == "eventsourcing_umadb"
    bank = Bank()
    alice = bank.open_account("Alice")
    bob = bank.open_account("Bob")
    bank.credit(alice, Decimal("10.00"))
    bank.credit(alice, Decimal("2.50"))
    bank.credit(bob, Decimal("1.00"))
    assert bank.balance(alice) == Decimal("12.50")
    assert bank.balance(bob) == Decimal("1.00")
    assert Bank().balance(alice) == Decimal("12.50")

    # The notification log pages through every event in order.
    section = bank.notification_log["1,10"]
    assert [n.id for n in section.items] == [1, 2, 3, 4, 5], section.items

    # Two instances that both load version 2 of Alice's account: the second save conflicts.
    first, second = Bank(), Bank()
    a1 = first.repository.get(alice, Account)
    a2 = second.repository.get(alice, Account)
    a1.credit(Decimal("1"))
    first.save(a1)
    a2.credit(Decimal("1"))
    try:
        second.save(a2)
    except IntegrityError:
        pass
    else:
        raise AssertionError("a concurrent save of the same version was not refused")
    assert Bank().balance(alice) == Decimal("13.50")
    print("bank:", bank.balance(alice), bank.balance(bob))
