# Checked by test_typing.py: mypy --strict must report an error on each of lines 6 to 9.
from umadb import AsyncClient, Client, Event, Query

client = Client("http://localhost:50051")
async_client = AsyncClient("http://localhost:50051")
client.append(Event("T", b""))
client.read(query=Query(), start="1")
position: str = client.head()
Event("T", "not bytes")
