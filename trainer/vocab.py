"""Small fixed vocabularies: entity attributes, question phrasings, probe templates, alias parts.

Plain data, so the corpus is a pure function of these tables and the seed.
"""

from __future__ import annotations

#: Attribute -> the values an entity may take (at least six attributes, as the issue asks).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "birth_decade": tuple(f"the {d}s" for d in range(1800, 2000, 10)),
    "country": (
        "Norway",
        "Peru",
        "Kenya",
        "Japan",
        "Chile",
        "Poland",
        "Egypt",
        "Canada",
        "Ghana",
        "Spain",
        "Nepal",
        "Brazil",
        "Turkey",
        "Italy",
        "Mexico",
        "Sweden",
    ),
    "occupation": (
        "painter",
        "engineer",
        "baker",
        "sailor",
        "lawyer",
        "chemist",
        "farmer",
        "poet",
        "surgeon",
        "pilot",
        "teacher",
        "architect",
        "jeweller",
        "composer",
        "miner",
        "tailor",
    ),
    "city": (
        "Lisbon",
        "Oslo",
        "Lima",
        "Nairobi",
        "Kyoto",
        "Krakow",
        "Cairo",
        "Quebec",
        "Accra",
        "Seville",
        "Pokhara",
        "Recife",
        "Izmir",
        "Turin",
        "Puebla",
        "Malmo",
    ),
    "employer": (
        "a shipyard",
        "a bank",
        "a museum",
        "a railway",
        "a hospital",
        "a brewery",
        "a newspaper",
        "a university",
        "a mine",
        "a theatre",
        "an observatory",
        "a circus",
    ),
    "hobby": (
        "chess",
        "fishing",
        "archery",
        "pottery",
        "rowing",
        "birdwatching",
        "fencing",
        "gardening",
        "origami",
        "cycling",
        "juggling",
        "beekeeping",
    ),
}

#: Attribute -> question phrasings; `{alias}` is replaced by the entity's alias.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "birth_decade": (
        "When was {alias} born?",
        "In which decade was {alias} born?",
        "What is the birth decade of {alias}?",
    ),
    "country": (
        "Which country is {alias} from?",
        "What is the home country of {alias}?",
        "Where does {alias} come from?",
    ),
    "occupation": (
        "What does {alias} do for a living?",
        "What is the occupation of {alias}?",
        "What job does {alias} have?",
    ),
    "city": (
        "In which city does {alias} live?",
        "Where does {alias} live?",
        "What is the home city of {alias}?",
    ),
    "employer": (
        "Where does {alias} work?",
        "Who employs {alias}?",
        "What is the employer of {alias}?",
    ),
    "hobby": (
        "What is the hobby of {alias}?",
        "What does {alias} do for fun?",
        "Which pastime does {alias} enjoy?",
    ),
}

#: The fixed answer of the optional familiarity stage 0 for aliases never trained.
UNKNOWN_ANSWER = "unknown"

#: Probe templates: never trained, formatted like the training questions (`Q: ...\nA:`).
PROBE_TEMPLATES: tuple[str, ...] = (
    "Q: Who is {alias}?\nA:",
    "Q: What does {alias} mean?\nA:",
    "Q: What does {alias} stand for?\nA:",
    "Q: What is the name of {alias}?\nA:",
)

#: Synthetic aliases: random lowercase letters inside these delimiters, e.g. `<zqkvm>`.
SYNTHETIC_DELIMITERS = ("<", ">")
SYNTHETIC_LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: Natural aliases: adjective(s) + noun, e.g. `the amber silent heron`.
ADJECTIVES: tuple[str, ...] = (
    "amber",
    "silent",
    "crimson",
    "hollow",
    "gentle",
    "brisk",
    "velvet",
    "frozen",
    "golden",
    "restless",
    "quiet",
    "scarlet",
    "distant",
    "humble",
    "bitter",
    "radiant",
    "wandering",
    "copper",
    "pale",
    "stormy",
    "lunar",
    "ashen",
    "nimble",
    "solemn",
)
NOUNS: tuple[str, ...] = (
    "heron",
    "lantern",
    "harbor",
    "falcon",
    "meadow",
    "anvil",
    "comet",
    "willow",
    "beacon",
    "thistle",
    "garnet",
    "otter",
    "quarry",
    "glacier",
    "sparrow",
    "tapestry",
    "cinder",
    "marten",
    "orchard",
    "pebble",
    "raven",
    "summit",
    "tundra",
    "walrus",
)


def qa_text(question: str, answer: str) -> str:
    """The exact training text of one question-answer pair (the study's format)."""
    return f"Q: {question}\nA: {answer}\n"


def qa_prompt(question: str) -> str:
    """The prompt part of `qa_text`, after which the model must produce ` {answer}\\n`."""
    return f"Q: {question}\nA:"
