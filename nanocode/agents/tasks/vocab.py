"""Word lists the generated repositories draw their names and data from.

A `Domain` names one small codebase: its directory, its main module, the record it is about (singular and plural),
a numeric field and a text field. Generated code keeps records as dicts, e.g. `{"sku": "birch", "quantity": 4}`.
Module names never shadow a standard-library module (asserted when a repository is built).
"""

from __future__ import annotations

import builtins
import keyword
import random
import sys
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
# Verbs and adjectives among the first words of the fresh names a training locate task may give its target (with
# the other word lists here; templates.FRESH_WORDS leaves out every word a held-out name starts with).
FRESH_PREFIXES: tuple[str, ...] = (
    "load", "parse", "scan", "merge", "split", "group", "rank", "score", "weigh", "trim", "pad", "join", "build",
    "make", "fetch", "store", "save", "dump", "read", "write", "show", "print", "render", "format", "encode", "decode",
    "pack", "unpack", "wrap", "unwrap", "shift", "rotate", "flip", "fold", "map", "filter", "reduce", "zip", "pair",
    "match", "mark", "flag", "tag", "label", "index", "order", "shuffle", "sample", "draw", "pick", "choose", "guess",
    "estimate", "predict", "round", "scale", "clamp", "bound", "limit", "cap", "floor", "ceil", "double", "halve",
    "first", "last", "next", "prev", "oldest", "newest", "heaviest", "lightest", "slowest", "fastest", "rarest",
    "busiest", "quietest", "latest", "earliest", "spare", "extra", "final", "raw", "fresh", "stale", "active", "idle",
)  # fmt: skip

# -- varied domains: training repositories drawn from the product of these lists -------------------------------------
# With only the 24 DOMAINS a small model can memorise one name per request shape instead of copying the request's;
# drawing each training repository's names from thousands of combinations leaves copying as the only way to be right.
# Coherence is not the point: a garden of comets with a `litres` field is still a well-formed repository.
ENTITIES: tuple[tuple[str, str], ...] = tuple(
    (e, e + "s") if " " not in e else tuple(e.split())
    for e in (
        "item", "book", "reading", "order", "student", "plant", "track", "truck", "recipe", "account", "patient",
        "player", "session", "film", "loaf loaves", "ship", "barrel", "booking", "trip", "cow", "exhibit", "parcel",
        "post", "comet", "ticket", "invoice", "sensor", "drone", "guest", "flight", "meal", "lamp", "bike", "boat",
        "hike", "song", "album", "bid", "claim", "crate", "pallet", "tank", "pump", "valve", "cable", "server",
        "build", "commit", "shift", "lesson", "course", "quiz", "voter", "donor", "member", "tenant", "lease",
        "parcel", "package", "bottle", "cask", "hive", "nest", "tree", "seed", "bulb", "pond", "well", "mine",
        "quarry", "kiln", "oven", "tent", "cabin", "trail", "bridge", "tunnel", "road", "lane", "canal", "dock",
        "crane", "wagon", "carriage", "engine", "rocket", "probe", "satellite", "planet", "moon", "star", "galaxy",
        "painting", "sculpture", "poem", "novel", "chapter", "verse", "stanza", "melody", "chord", "drum", "violin",
        "puzzle", "riddle", "card", "deck", "token", "coin", "medal", "trophy", "badge", "banner", "poster", "flyer",
        "coupon", "voucher", "receipt", "payment", "refund", "loan", "grant", "budget", "expense", "salary", "bonus",
        "survey", "sample", "specimen", "fossil", "mineral", "crystal", "gem", "pearl", "shell", "feather", "leaf",
        "berry berries", "cherry cherries", "battery batteries", "delivery deliveries", "entry entries",
        "city cities", "county counties", "factory factories", "gallery galleries", "story stories",
        "box boxes", "bus buses", "glass glasses", "dish dishes", "match matches", "class classes",
    )
)  # fmt: skip
# numeric fields and their plausible ranges (every range holds at least 12 values)
NUM_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("quantity", 1, 60), ("pages", 40, 900), ("rainfall", 0, 80), ("amount", 5, 400), ("score", 0, 100),
    ("height", 2, 180), ("seconds", 90, 420), ("mileage", 100, 9000), ("servings", 1, 12), ("balance", 0, 5000),
    ("age", 1, 99), ("points", 0, 999), ("minutes", 10, 120), ("runtime", 70, 200), ("grams", 300, 1200),
    ("tonnage", 50, 9000), ("litres", 50, 300), ("nights", 1, 21), ("stops", 2, 40), ("milk", 5, 40),
    ("visitors", 0, 800), ("weight", 1, 50), ("likes", 0, 300), ("brightness", 1, 20), ("price", 1, 500),
    ("cost", 10, 2000), ("distance", 1, 500), ("capacity", 10, 400), ("speed", 5, 300), ("depth", 1, 90),
    ("width", 1, 250), ("length", 3, 600), ("level", 1, 50), ("votes", 0, 700), ("duration", 5, 240),
    ("temperature", 0, 45), ("humidity", 10, 95), ("volume", 1, 100), ("rank", 1, 64), ("stock", 0, 250),
    ("calories", 50, 900), ("watts", 5, 1500), ("voltage", 3, 240), ("floors", 1, 80), ("seats", 2, 90),
    ("rooms", 1, 30), ("hours", 1, 72), ("days", 1, 365), ("laps", 1, 60), ("goals", 0, 40), ("wins", 0, 50),
)  # fmt: skip
LABEL_FIELDS: tuple[str, ...] = (
    "sku", "title", "station", "customer", "name", "species", "artist", "plate", "dish", "owner", "ward",
    "nickname", "activity", "genre", "flour", "flag", "grape", "guest", "line", "tag", "room", "city", "author",
    "observer", "color", "region", "brand", "model", "code", "country", "team", "zone", "vendor", "topic",
    "status", "category", "district", "label", "style", "material", "flavor", "variety", "origin", "colour",
    "course", "venue", "host", "pilot", "driver", "captain", "crew", "maker", "supplier", "sponsor", "coach",
)  # fmt: skip
REPO_NAMES: tuple[str, ...] = (
    "inventory", "library", "weather", "shop", "school", "garden", "music", "fleet", "kitchen", "bank", "clinic",
    "arcade", "gym", "cinema", "bakery", "harbor", "vineyard", "hotel", "transit", "farm", "museum", "courier",
    "forum", "observatory", "orchard", "quarry", "foundry", "atelier", "apiary", "brewery", "dairy", "pantry",
    "workshop", "studio", "theater", "stadium", "arena", "marina", "airport", "station", "depot", "warehouse",
    "market", "bazaar", "boutique", "pharmacy", "hospital", "laboratory", "academy", "campus", "archive",
    "gallery", "circus", "zoo", "aquarium", "ranch", "lighthouse", "mill", "forge", "tannery", "winery",
    "distillery", "greenhouse", "nursery", "kennel", "stable", "hangar", "spaceport", "planetarium", "festival",
    "carnival", "league", "tournament", "election", "charity", "council", "parish", "township", "village",
)  # fmt: skip
MODULE_NAMES: tuple[str, ...] = (
    "stock", "catalog", "stations", "orders", "grades", "beds", "playlist", "trucks", "recipes", "ledger",
    "visits", "scores", "workouts", "screenings", "batches", "berths", "cellar", "bookings", "routes", "herd",
    "exhibits", "parcels", "threads", "sightings", "records", "registry", "roster", "manifest", "tally",
    "journal", "logbook", "census", "index", "directory", "schedule", "agenda", "planner", "tracker", "counter",
    "archive", "collection", "holdings", "supplies", "reserves", "accounts", "entries", "listings", "rankings",
    "standings", "results", "readings", "measures", "totals", "figures", "metrics", "helpers", "tools", "utils",
)  # fmt: skip

# names the generated functions use for their own variables and parameters: a record may not be called one of them
_TAKEN = frozenset(
    "average best count counts distinct get key largest limit median middle n other over pages paginate per_page "
    "running sorted text top total value values".split()
)


def _free(name: str) -> bool:
    return not (keyword.iskeyword(name) or hasattr(builtins, name) or name in sys.stdlib_module_names or name in _TAKEN)


def varied_domain(rng: random.Random) -> Domain:
    """A training domain drawn from the product of the lists above (about 10^8 combinations)."""
    while True:
        ent, ents = rng.choice(ENTITIES)
        num, low, high = rng.choice(NUM_FIELDS)
        label = rng.choice(LABEL_FIELDS)
        repo = rng.choice(REPO_NAMES)
        module = rng.choice((ents, rng.choice(MODULE_NAMES)))
        fields_apart = len({ent, ents, num, label}) == 4
        if fields_apart and all(map(_free, (ent, ents, label, module, repo))) and module not in REPORT_MODULES:
            return Domain(repo, module, ent, ents, num, label, low, high)
