"""The example DCB application of eventsourcing-umadb's README, run as a user would: configured
only by the environment (PERSISTENCE_MODULE=eventsourcing_umadb, UMADB_URI)."""

from __future__ import annotations

from typing import TypedDict

from eventsourcing.domain import triggers
from eventsourcing.pydantic import DcbApplication, Decision, EnduringObject


class Dog(EnduringObject):
    class Registered(Decision):
        dog_id: str
        name: str

    class TrickAdded(Decision):
        dog_id: str
        trick: str

    @triggers(Registered)
    def __init__(self, *, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @triggers(TrickAdded)
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSummary(TypedDict):
    name: str
    tricks: tuple[str, ...]


class TrainingSchool(DcbApplication):
    def register(self, name: str) -> str:
        dog = Dog(name=name)
        self.repository.save(dog)
        return dog.id

    def add_trick(self, dog_id: str, trick: str) -> None:
        dog = self.repository.get(dog_id, Dog)
        dog.add_trick(trick)
        self.repository.save(dog)

    def get_dog(self, dog_id: str) -> DogSummary:
        dog = self.repository.get(dog_id, Dog)
        return {"name": dog.name, "tricks": tuple(dog.tricks)}


if __name__ == "__main__":
    import os

    import umadb

    assert os.environ["PERSISTENCE_MODULE"] == "eventsourcing_umadb"
    app = TrainingSchool()
    dog_id = app.register("Fido")
    app.add_trick(dog_id, "roll over")
    app.add_trick(dog_id, "play dead")
    dog = app.get_dog(dog_id)
    assert dog["name"] == "Fido"
    assert dog["tricks"] == ("roll over", "play dead")

    # A second application instance reads the same events back from UmaDB.
    again = TrainingSchool().get_dog(dog_id)
    assert again == dog, again

    # The events are in the store, tagged by the application.
    client = umadb.Client(os.environ["UMADB_URI"])
    recorded = list(client.read())
    assert [e.event.event_type.rsplit(".", 1)[-1] for e in recorded] == [
        "Registered",
        "TrickAdded",
        "TrickAdded",
    ], recorded
    print("training school:", dog)
