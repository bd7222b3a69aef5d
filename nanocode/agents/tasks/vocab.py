"""Word lists the generated repositories draw their names and data from.

A `Domain` names one small codebase: its directory, its main module, the record it is about (singular and plural),
a numeric field and a text field. Generated code keeps records as dicts, e.g. `{"sku": "birch", "quantity": 4}`.
Module names never shadow a standard-library module (asserted when a repository is built).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    repo: str  # directory (and package) name
    module: str  # the module holding the helpers
    ent: str  # one record
    ents: str  # several records (also the parameter name)
    num: str  # numeric field
    label: str  # text field
    low: int  # plausible range of the numeric field
    high: int


DOMAINS: tuple[Domain, ...] = (
    Domain("inventory", "stock", "item", "items", "quantity", "sku", 1, 60),
    Domain("library", "catalog", "book", "books", "pages", "title", 40, 900),
    Domain("weather", "stations", "reading", "readings", "rainfall", "station", 0, 80),
    Domain("shop", "orders", "order", "orders", "amount", "customer", 5, 400),
    Domain("school", "grades", "student", "students", "score", "name", 0, 100),
    Domain("garden", "beds", "plant", "plants", "height", "species", 2, 180),
    Domain("music", "playlist", "track", "tracks", "seconds", "artist", 90, 420),
    Domain("fleet", "trucks", "truck", "trucks", "mileage", "plate", 100, 9000),
    Domain("kitchen", "recipes", "recipe", "recipes", "servings", "dish", 1, 12),
    Domain("bank", "ledger", "account", "accounts", "balance", "owner", 0, 5000),
    Domain("clinic", "visits", "patient", "patients", "age", "ward", 1, 99),
    Domain("arcade", "scores", "player", "players", "points", "nickname", 0, 999),
    Domain("gym", "workouts", "session", "sessions", "minutes", "activity", 10, 120),
    Domain("cinema", "screenings", "film", "films", "runtime", "genre", 70, 200),
    Domain("bakery", "batches", "loaf", "loaves", "grams", "flour", 300, 1200),
    Domain("harbor", "berths", "ship", "ships", "tonnage", "flag", 50, 9000),
    Domain("vineyard", "cellar", "barrel", "barrels", "litres", "grape", 50, 300),
    Domain("hotel", "bookings", "booking", "bookings", "nights", "guest", 1, 21),
    Domain("transit", "routes", "trip", "trips", "stops", "line", 2, 40),
    Domain("farm", "herd", "cow", "cows", "milk", "tag", 5, 40),
    Domain("museum", "exhibits", "exhibit", "exhibits", "visitors", "room", 0, 800),
    Domain("courier", "parcels", "parcel", "parcels", "weight", "city", 1, 50),
    Domain("forum", "threads", "post", "posts", "likes", "author", 0, 300),
    Domain("observatory", "sightings", "comet", "comets", "brightness", "observer", 1, 20),
)

# Values of the text field: short, lowercase, distinct words.
WORDS: tuple[str, ...] = (
    "alder", "birch", "cedar", "delta", "ember", "fable", "garnet", "hazel", "iris", "juniper", "kestrel", "lumen",
    "maple", "nova", "onyx", "pebble", "quartz", "raven", "sable", "thistle", "umber", "violet", "willow", "yarrow",
    "zephyr", "aspen", "briar", "coral", "dune", "fern", "glade", "heron", "indigo", "jasper", "lark", "moss",
)  # fmt: skip

# Verbs for renamed functions (rename tasks) and the modules a second file may take its name from.
RENAME_PREFIXES: tuple[str, ...] = ("compute", "get", "calc", "find", "sum", "pick", "collect", "measure")
REPORT_MODULES: tuple[str, ...] = ("report", "summary", "digest", "overview")
