"""Generate `datasets/products-synth`: a small hardware-store catalogue with known relevance.

Shoppers search in trade jargon ("sawzall", "romex", "shop vac") that a general-purpose
embedding model maps poorly onto catalogue titles ("Reciprocating Saw", "NM-B Electrical Wire",
"Wet/Dry Vacuum"). Relevance is known by construction, so clicks from simulated users carry a
signal that fine-tuning can learn, and the true judgments measure whether it did.

Grades: 3 = the product type the query means, and the brand and attribute it names, if any;
2 = the right type with a different brand or attribute; 1 = a related type (a blade for a saw).
Queries are split by query id (60/40, seeded); the jargon of a type appears in both splits, in
different query templates, so what clicks teach on train queries can transfer to test queries.

Run: `python datasets/make_products.py [OUT_DIR]` (deterministic; output is committed).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

SEED = 20261123


@dataclass(frozen=True)
class ProductType:
    name: str  # how the catalogue titles it
    jargon: tuple[str, ...]  # how shoppers ask for it
    attributes: tuple[str, ...]
    brands: tuple[str, ...]
    related: tuple[str, ...] = ()


TYPES = (
    ProductType(
        "Reciprocating Saw",
        ("sawzall", "recip saw", "demo saw"),
        ("18V Cordless", "Corded 12 Amp", "Compact"),
        ("Milwaukee", "DeWalt", "Ryobi"),
        ("Reciprocating Saw Blade Set",),
    ),
    ProductType(
        "Reciprocating Saw Blade Set",
        ("sawzall blades", "demo blades"),
        ("Wood Cutting", "Metal Cutting", "Demolition"),
        ("Milwaukee", "Diablo", "DeWalt"),
    ),
    ProductType(
        "NM-B Electrical Wire",
        ("romex", "house wire", "12-2 wire"),
        ("12/2 250 ft.", "14/2 100 ft.", "10/3 50 ft."),
        ("Southwire", "Cerrowire"),
    ),
    ProductType(
        "Wet/Dry Vacuum",
        ("shop vac", "shopvac", "garage vacuum"),
        ("5 Gal.", "12 Gal.", "16 Gal."),
        ("Ridgid", "Craftsman", "Vacmaster"),
        ("Wet/Dry Vacuum Filter",),
    ),
    ProductType(
        "Wet/Dry Vacuum Filter",
        ("shop vac filter", "vac cartridge"),
        ("Standard", "HEPA", "Fine Dust"),
        ("Ridgid", "Craftsman"),
    ),
    ProductType(
        "Oriented Strand Board Panel",
        ("osb", "osb sheathing", "chipboard"),
        ("7/16 in. x 4 ft. x 8 ft.", "23/32 in. x 4 ft. x 8 ft."),
        ("LP", "Norbord"),
    ),
    ProductType(
        "Kiln-Dried Whitewood Stud",
        ("2x4", "2 by 4", "framing lumber"),
        ("8 ft.", "10 ft.", "Precut 92-5/8 in."),
        ("Generic", "WeatherShield"),
    ),
    ProductType(
        "Cross-Linked Polyethylene Pipe",
        ("pex", "pex tubing", "pex pipe"),
        ("1/2 in. x 100 ft. Red", "3/4 in. x 100 ft. Blue", "1/2 in. x 20 ft. White"),
        ("SharkBite", "Apollo", "Uponor"),
        ("Push-to-Connect Fitting",),
    ),
    ProductType(
        "Push-to-Connect Fitting",
        ("sharkbite", "push fitting", "pex coupling"),
        ("1/2 in. Coupling", "3/4 in. Tee", "1/2 in. Elbow"),
        ("SharkBite", "Apollo"),
    ),
    ProductType(
        "Ground Fault Circuit Interrupter Outlet",
        ("gfci", "gfi outlet", "bathroom outlet"),
        ("15 Amp White", "20 Amp White", "15 Amp Tamper Resistant"),
        ("Leviton", "Eaton", "Legrand"),
    ),
    ProductType(
        "Hydraulic Impact Driver",
        ("impact", "impact gun", "screw gun"),
        ("18V Cordless", "20V MAX Brushless", "12V Compact"),
        ("Milwaukee", "DeWalt", "Makita", "Ryobi"),
        ("Impact Rated Driver Bit Set",),
    ),
    ProductType(
        "Impact Rated Driver Bit Set",
        ("impact bits", "driver bits"),
        ("40-Piece", "100-Piece", "Phillips #2"),
        ("DeWalt", "Milwaukee", "Makita"),
    ),
    ProductType(
        "Oscillating Multi-Tool",
        ("multi tool", "oscillating tool", "fein tool"),
        ("18V Cordless", "Corded 3 Amp", "Starlock"),
        ("DeWalt", "Dremel", "Ryobi"),
    ),
    ProductType(
        "Drywall Joint Compound",
        ("mud", "drywall mud", "spackle bucket"),
        ("All Purpose 4.5 Gal.", "Lightweight 3.5 Gal.", "Setting Type 18 lb."),
        ("USG Sheetrock", "Westpac"),
        ("Drywall Taping Knife",),
    ),
    ProductType(
        "Drywall Taping Knife",
        ("mud knife", "taping blade"),
        ("6 in.", "10 in.", "12 in."),
        ("Hyde", "Warner", "Husky"),
    ),
    ProductType(
        "Gypsum Wallboard Panel",
        ("sheetrock", "drywall sheet", "gyp board"),
        ("1/2 in. x 4 ft. x 8 ft.", "5/8 in. Fire Rated", "Moisture Resistant"),
        ("USG Sheetrock", "Gold Bond"),
    ),
    ProductType(
        "Quick-Setting Concrete Mix",
        ("quikrete", "fence post concrete", "sackcrete"),
        ("50 lb. Bag", "80 lb. Bag"),
        ("Quikrete", "Sakrete"),
    ),
    ProductType(
        "Polyvinyl Chloride Cement",
        ("pvc glue", "purple primer and glue"),
        ("8 oz. Clear", "16 oz. Medium Body", "Primer Combo"),
        ("Oatey", "Christy's"),
    ),
    ProductType(
        "Expanding Polyurethane Foam Sealant",
        ("great stuff", "spray foam", "gap filler"),
        ("12 oz. Gaps and Cracks", "20 oz. Window and Door", "Fireblock"),
        ("Great Stuff", "Loctite"),
    ),
    ProductType(
        "Silicone Sealant Caulk",
        ("caulk", "bathtub caulk", "tub and tile sealant"),
        ("10.1 oz. Clear", "10.1 oz. White", "Kitchen and Bath"),
        ("GE", "DAP", "Red Devil"),
        ("Caulking Gun",),
    ),
    ProductType(
        "Caulking Gun",
        ("caulk gun", "sealant gun"),
        ("Dripless 10 oz.", "Heavy Duty 28 oz.", "Cordless 18V"),
        ("Newborn", "Ryobi", "Red Devil"),
    ),
    ProductType(
        "Laminated Padlock",
        ("master lock", "shed lock", "gate lock"),
        ("1-3/4 in. Keyed", "2 in. Long Shackle", "4-Pack Keyed Alike"),
        ("Master Lock", "Abus"),
    ),
    ProductType(
        "Tongue and Groove Pliers",
        ("channellocks", "channel locks", "water pump pliers"),
        ("10 in.", "12 in.", "3-Piece Set"),
        ("Channellock", "Knipex", "Husky"),
    ),
    ProductType(
        "Locking Pliers",
        ("vise grips", "vice grip", "mole grips"),
        ("10 in. Curved Jaw", "6 in. Long Nose", "5-Piece Set"),
        ("Irwin", "Husky", "Milwaukee"),
    ),
    ProductType(
        "Self-Leveling Rotary Laser",
        ("laser level", "rotary laser", "site laser"),
        ("Interior Green Beam", "Exterior Red Beam Kit"),
        ("Bosch", "DeWalt", "Johnson"),
    ),
    ProductType(
        "Toilet Wax Ring Gasket",
        ("wax ring", "toilet seal", "toilet gasket"),
        ("Standard", "Extra Thick with Flange", "Wax-Free"),
        ("Oatey", "Fluidmaster"),
    ),
    ProductType(
        "Fill Valve Replacement Kit",
        ("fluidmaster", "toilet fill valve", "running toilet fix"),
        ("Universal", "Pro Series", "with Flapper"),
        ("Fluidmaster", "Korky"),
    ),
    ProductType(
        "Pressure-Treated Deck Board",
        ("deck boards", "pt lumber", "treated decking"),
        ("5/4 in. x 6 in. x 8 ft.", "5/4 in. x 6 in. x 12 ft.", "2x6 x 10 ft."),
        ("Severe Weather", "YellaWood"),
    ),
    ProductType(
        "Ceramic Floor Tile",
        ("subway tile", "floor tile", "porcelain tile"),
        ("12 in. x 12 in. Beige", "3 in. x 6 in. White Glossy", "12 in. x 24 in. Gray"),
        ("Daltile", "MSI", "TrafficMaster"),
        ("Tile Grout",),
    ),
    ProductType(
        "Tile Grout",
        ("grout", "sanded grout", "tile filler"),
        ("Sanded 25 lb. Gray", "Unsanded 10 lb. White", "Premixed 1 Gal."),
        ("Custom Building Products", "Mapei"),
    ),
)

ALL_BRANDS = sorted({brand for t in TYPES for brand in t.brands})

# Types no query asks for: near neighbours in wording that make jargon queries hard to get right.
DISTRACTORS = tuple(
    ProductType(name, (), attributes, brands)
    for name, attributes, brands in (
        (
            "Circular Saw",
            ("7-1/4 in. Corded", "18V Cordless", "Worm Drive"),
            ("Skil", "DeWalt", "Makita"),
        ),
        (
            "Jig Saw",
            ("Corded 6.5 Amp", "18V Cordless", "Barrel Grip"),
            ("Bosch", "DeWalt", "Ryobi"),
        ),
        (
            "Compound Miter Saw",
            ("10 in. Single Bevel", "12 in. Sliding"),
            ("DeWalt", "Makita", "Ryobi"),
        ),
        (
            "Cordless Drill Driver",
            ("18V Compact", "20V MAX", "12V"),
            ("DeWalt", "Milwaukee", "Ryobi"),
        ),
        ("Hammer Drill", ("1/2 in. Corded", "18V Brushless"), ("Bosch", "Milwaukee", "Makita")),
        ("Canister Vacuum", ("Bagless", "HEPA Bagged"), ("Bissell", "Shark", "Kenmore")),
        ("Cordless Stick Vacuum", ("Lightweight", "Pet Hair"), ("Shark", "Bissell", "Ryobi")),
        (
            "Sanded Plywood Sheet",
            ("1/2 in. x 4 ft. x 8 ft.", "3/4 in. x 4 ft. x 8 ft."),
            ("Columbia Forest", "PureBond"),
        ),
        ("Type M Copper Pipe", ("1/2 in. x 10 ft.", "3/4 in. x 10 ft."), ("Mueller", "Cerro")),
        ("CPVC Pipe", ("1/2 in. x 10 ft.", "3/4 in. x 10 ft."), ("Charlotte", "Genova")),
        (
            "Standard Duplex Outlet",
            ("15 Amp White", "20 Amp Ivory", "10-Pack"),
            ("Leviton", "Eaton"),
        ),
        ("USB Charger Outlet", ("Type A and C", "4.0 Amp"), ("Leviton", "Legrand")),
        (
            "Socket Wrench Set",
            ("1/4 in. Drive 40-Piece", "3/8 in. Drive 80-Piece"),
            ("Husky", "Craftsman"),
        ),
        ("Needle Nose Pliers", ("6 in.", "8 in. Bent"), ("Irwin", "Klein Tools", "Husky")),
        ("Wood Glue", ("8 oz. Interior", "16 oz. Waterproof"), ("Titebond", "Gorilla", "Elmer's")),
        (
            "Two-Part Epoxy",
            ("5 Minute 0.85 oz.", "Steel Reinforced"),
            ("Loctite", "Gorilla", "J-B Weld"),
        ),
        (
            "Aluminum Torpedo Level",
            ("9 in. Magnetic", "24 in. Box Beam"),
            ("Empire", "Johnson", "Stanley"),
        ),
        ("Toilet Flapper", ("2 in. Universal", "3 in. Adjustable"), ("Fluidmaster", "Korky")),
        (
            "Luxury Vinyl Plank Flooring",
            ("Oak 7 in. x 48 in.", "Gray Click Lock"),
            ("LifeProof", "TrafficMaster"),
        ),
        ("Exterior Latex Paint", ("1 Gal. Flat White", "5 Gal. Satin"), ("Behr", "Glidden")),
    )
)


def make_corpus(rng: random.Random) -> list[dict]:
    corpus, number = [], 100_000
    for product_type in TYPES + DISTRACTORS:
        for brand in product_type.brands:
            for attribute in product_type.attributes:
                for pack in ("", " (2-Pack)") if rng.random() < 0.5 else ("",):
                    number += rng.randint(1, 40)
                    corpus.append(
                        {
                            "_id": str(number),
                            "title": "",
                            "text": f"{brand} {attribute} {product_type.name}{pack}",
                            "type": product_type.name,
                            "brand": brand,
                            "attribute": attribute,
                        }
                    )
    return corpus


def make_queries(rng: random.Random) -> list[dict]:
    queries = []
    for product_type in TYPES:
        for jargon in product_type.jargon:
            queries.append({"text": jargon, "type": product_type.name})
            for brand in rng.sample(product_type.brands, k=min(2, len(product_type.brands))):
                queries.append(
                    {"text": f"{brand.lower()} {jargon}", "type": product_type.name, "brand": brand}
                )
            attribute = rng.choice(product_type.attributes)
            short = attribute.split(" ")[0].lower()
            queries.append(
                {"text": f"{jargon} {short}", "type": product_type.name, "attribute": attribute}
            )
    unique = {q["text"]: q for q in queries}
    return [{"_id": str(i + 1), **q} for i, q in enumerate(unique.values())]


def grade(query: dict, product: dict) -> int:
    if product["type"] == query["type"]:
        exact = (
            query.get("brand", product["brand"]) == product["brand"]
            and query.get("attribute", product["attribute"]) == product["attribute"]
        )
        return 3 if exact else 2
    related = next(t for t in TYPES if t.name == query["type"]).related
    return 1 if product["type"] in related else 0


def write(out: Path) -> None:
    rng = random.Random(SEED)
    corpus, queries = make_corpus(rng), make_queries(rng)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w") as f:
        for doc in corpus:
            f.write(json.dumps({k: doc[k] for k in ("_id", "title", "text")}) + "\n")
    with (out / "queries.jsonl").open("w") as f:
        for query in queries:
            f.write(json.dumps({"_id": query["_id"], "text": query["text"]}) + "\n")
    with (out / "qrels.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for query in queries:
            for doc in corpus:
                if (g := grade(query, doc)) > 0:
                    f.write(f"{query['_id']}\t{doc['_id']}\t{g}\n")
    ids = [q["_id"] for q in queries]
    rng.shuffle(ids)
    cut = round(0.6 * len(ids))
    split = {"train": sorted(ids[:cut], key=int), "test": sorted(ids[cut:], key=int)}
    (out / "split.json").write_text(json.dumps(split) + "\n")
    print(
        f"{out}: {len(corpus)} products, {len(queries)} queries "
        f"({len(split['train'])} train, {len(split['test'])} test)"
    )


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "products-synth")
