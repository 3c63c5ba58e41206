"""The class tables of Broden+, the multi-task set of the UPerNet paper (Xiao et al. 2018), as
CSAIL's unifiedparsing code numbers them (``meta_file/joint_dataset/*.csv``): the label numbers its
released checkpoint's classifier channels stand for.

- ``BRODEN_PLUS_OBJECTS`` / ``_PARTS`` / ``_MATERIALS``: names by label number, 0 = "-" (CSAIL's
  background, never trained); ``BRODEN_PLUS_SCENES``: names by label number (no background).
- ``BRODEN_PLUS_OBJECT_PARTS``: ``object_part_hierarchy.csv`` in row order (ascending object
  label): (object label, its part labels, "-" = 0 first).

:func:`broden_plus_metadata` gives the multi-task metadata of these classes in this project's
convention: object / material train id = label - 1, scene train id = label, and global part ids
in object order, each object's "-" part first, then its parts in CSAIL's order.
"""

from __future__ import annotations

from typing import Any

from .sem_seg import distinct_colors

__all__ = [
    "BRODEN_PLUS_IGNORE_LABEL",
    "BRODEN_PLUS_MATERIALS",
    "BRODEN_PLUS_OBJECTS",
    "BRODEN_PLUS_OBJECT_PARTS",
    "BRODEN_PLUS_PARTS",
    "BRODEN_PLUS_SCENES",
    "BRODEN_PLUS_METADATA_NAME",
    "broden_plus_metadata",
]

# Train id of unlabelled pixels: Broden+ has 427 part classes, so 255 would be one of them
BRODEN_PLUS_IGNORE_LABEL = 65535

# fmt: off
BRODEN_PLUS_OBJECTS: tuple[str, ...] = (
    "-", "wall", "sky", "floor", "tree", "building", "person", "ceiling", "table", "window", "road",
    "grass", "chair", "car", "plant", "painting", "door", "sidewalk", "light", "cabinet",
    "signboard", "lamp", "ground", "curtain", "pole", "mountain", "fence", "streetlight", "bed",
    "sofa", "box", "earth", "shelf", "bottle", "cushion", "water", "book", "flower", "carpet",
    "mirror", "vase", "flowerpot", "sink", "dog", "armchair", "rock", "wall socket", "sconce",
    "pillow", "cat", "step", "pot", "plate", "railing", "clock", "bag", "column", "bicycle",
    "cloth", "coffee table", "ashcan", "spotlight", "bench", "boat", "basket", "work surface",
    "bowl", "desk", "airplane", "bird", "house", "plaything", "sea", "paper", "television",
    "chandelier", "cup", "pottedplant", "path", "switch", "stairway", "van", "stove", "truck",
    "awning", "chest of drawers", "traffic light", "seat", "poster", "glass", "flag", "telephone",
    "fire place", "rope", "towel", "monitor", "bucket", "bush", "stool", "field", "tray",
    "bannister", "trade name", "wood", "fan", "horse", "motorbike", "base", "train", "bathtub",
    "toilet", "refrigerator", "counter", "wardrobe", "food", "candlestick", "blind", "computer",
    "board", "palm", "bus", "track", "microwave", "sand", "sculpture", "fluorescent", "countertop",
    "swivel chair", "snow", "river", "air conditioner", "ottoman", "jar", "stair", "pack", "bridge",
    "skyscraper", "minibike", "loudspeaker", "figurine", "can", "sheep", "cow", "bookcase",
    "bedclothes", "exhaust hood", "hill", "napkin", "doorframe", "umbrella", "manhole", "case",
    "container", "coach", "dishwasher", "text", "knife", "crt screen", "magazine", "curb", "oven",
    "monitoring device", "gate", "blanket", "radiator", "platform", "central reservation",
    "bulletin board", "laptop", "shoe", "pool table", "metal", "fruit", "keyboard", "coffee maker",
    "candle", "faucet", "pipe", "handbag", "wineglass", "mug", "wire", "apparel", "land", "pitcher",
    "remote control", "bar", "grill", "ball", "backpack", "grandstand", "beam", "pane", "fork",
    "hedge", "notebook", "toilet tissue", "parking meter", "pen", "fireplug", "screen door",
    "brush", "heater", "booklet", "kitchen island", "tower", "ladder", "hat", "shower",
    "soap dispenser", "spoon", "post", "antenna", "buffet", "kettle", "traveling bag", "stage",
    "printer", "teapot", "chest", "embankment", "rack", "document", "crane", "mouse",
    "silver screen", "animal", "pier", "post box", "rod", "vent", "console table", "camera",
    "statue", "jacket", "dishrag", "microphone", "fountain", "paper towel", "pool ball", "washer",
    "mouse pad", "partition", "banner", "tent", "runway", "towel rack", "hanger", "guitar",
    "place mat", "system", "ashtray", "soap", "cue", "booth", "deck chair", "bouquet", "waterfall",
    "dirt track", "vending machine", "eyeglass", "drawer", "saddle", "canister", "helmet", "hovel",
    "shutter", "telephone booth", "shirt", "cradle", "candelabrum", "tank", "toaster",
    "traffic cone", "soap dish", "arcade machine", "machine", "net", "easel", "cart", "skylight",
    "cross", "newspaper", "canopy", "barrel", "smoke", "footbridge", "wheel", "baby buggy",
    "fire extinguisher", "shower stall", "swimming pool", "sales booth", "scaffolding", "fridge",
    "patty", "altar", "streetcar", "decoration", "tapestry", "trouser", "billboard", "file cabinet",
    "cap", "bread", "cage", "hot tub", "drawing", "saucepan", "piano", "dish", "conveyer belt",
    "arcade", "equipment", "trunk", "cd", "court", "blackboard", "lake", "ship", "railroad train",
    "lighthouse", "bus stop", "exhibitor", "jersey", "plinth", "fabric", "projector", "forecourt",
    "eiderdown", "mat", "cash register", "calendar", "briefcase", "stick", "chimney",
)

BRODEN_PLUS_PARTS: tuple[str, ...] = (
    "-", "leg", "head", "torso", "arm", "window", "eye", "ear", "door", "nose", "neck", "hand",
    "wheel", "hair", "mouth", "foot", "eyebrow", "tail", "muzzle", "headlight", "back", "drawer",
    "shade", "paw", "column", "body", "mirror", "headboard", "base", "faucet", "license plate",
    "top", "seat", "seat cushion", "wing", "roof", "screen", "taillight", "back pillow",
    "windshield", "balcony", "door frame", "beak", "seat base", "cap", "stern", "frame", "handle",
    "footboard", "handle bar", "plant", "pot", "apron", "shop window", "engine", "saddle",
    "chain wheel", "lid", "side", "pane", "railing", "chimney", "bumper", "coach", "skirt",
    "button panel", "crosswalk", "keyboard", "stove", "shelf", "knob", "monitor", "oven", "hoof",
    "front", "canopy", "water tank", "bowl", "backplate", "aperture", "tube", "mouse", "cloud",
    "face", "metal shutter", "stretcher", "computer case", "sash", "shutter", "chain", "blade",
    "horn", "dormer", "pipe", "lower sash", "tap", "entrance", "step", "corner pocket", "bulb",
    "upper sash", "bed", "diffusor", "rail", "cord", "side rail", "housing", "dome", "side pocket",
    "receiver", "beam", "button", "pedestal", "balustrade", "garage door", "dial", "opening",
    "gas cap", "casing", "head roof", "sill", "motor", "fire escape", "trunk", "vent", "fuselage",
    "earmuffs", "lock", "speaker", "grille", "stabilizer", "piston", "landing gear", "stile",
    "arcades", "muntin", "burner", "shaft", "cabinet", "capital", "stem", "coach roof", "wall",
    "panel", "hinge", "plate", "wiper", "terrace", "ladder", "socket", "branch", "bedpost", "logo",
)

BRODEN_PLUS_MATERIALS: tuple[str, ...] = (
    "-", "brick", "cardboard", "carpet", "ceramic", "fabric", "foliage", "food", "fur", "glass",
    "hair", "laminate", "leather", "metal", "mirror", "painted", "paper", "plastic",
    "polished stone", "rubber/latex", "skin", "stone", "tile", "wallpaper", "wicker", "wood",
)

BRODEN_PLUS_SCENES: tuple[str, ...] = (
    "airfield", "airplane_cabin", "airport_terminal", "alcove", "alley", "amphitheater",
    "amusement_arcade", "amusement_park", "apartment_building/outdoor", "aquarium", "aqueduct",
    "arcade", "arch", "archaelogical_excavation", "archive", "arena/hockey", "arena/performance",
    "arena/rodeo", "army_base", "art_gallery", "art_school", "art_studio", "artists_loft",
    "assembly_line", "athletic_field/outdoor", "atrium/public", "attic", "auditorium",
    "auto_factory", "auto_showroom", "badlands", "bakery/shop", "balcony/exterior",
    "balcony/interior", "ball_pit", "ballroom", "bamboo_forest", "bank_vault", "banquet_hall",
    "bar", "barn", "barndoor", "baseball_field", "basement", "basketball_court/indoor", "bathroom",
    "bazaar/indoor", "bazaar/outdoor", "beach", "beach_house", "beauty_salon", "bedchamber",
    "bedroom", "beer_garden", "beer_hall", "berth", "biology_laboratory", "boardwalk", "boat_deck",
    "boathouse", "bookstore", "booth/indoor", "botanical_garden", "bow_window/indoor",
    "bowling_alley", "boxing_ring", "bridge", "building_facade", "bullring", "burial_chamber",
    "bus_interior", "bus_station/indoor", "butchers_shop", "butte", "cabin/outdoor", "cafeteria",
    "campsite", "campus", "canal/natural", "canal/urban", "candy_store", "canyon", "car_interior",
    "carrousel", "castle", "catacomb", "cemetery", "chalet", "chemistry_lab", "childs_room",
    "church/indoor", "church/outdoor", "classroom", "clean_room", "cliff", "closet",
    "clothing_store", "coast", "cockpit", "coffee_shop", "computer_room", "conference_center",
    "conference_room", "construction_site", "corn_field", "corral", "corridor", "cottage",
    "courthouse", "courtyard", "creek", "crevasse", "crosswalk", "dam", "delicatessen",
    "department_store", "desert/sand", "desert/vegetation", "desert_road", "diner/outdoor",
    "dining_hall", "dining_room", "discotheque", "doorway/outdoor", "dorm_room", "downtown",
    "dressing_room", "driveway", "drugstore", "elevator/door", "elevator_lobby", "elevator_shaft",
    "embassy", "engine_room", "entrance_hall", "escalator/indoor", "excavation", "fabric_store",
    "farm", "fastfood_restaurant", "field/cultivated", "field/wild", "field_road", "fire_escape",
    "fire_station", "fishpond", "flea_market/indoor", "florist_shop/indoor", "food_court",
    "football_field", "forest/broadleaf", "forest_path", "forest_road", "formal_garden", "fountain",
    "galley", "garage/indoor", "garage/outdoor", "gas_station", "gazebo/exterior",
    "general_store/indoor", "general_store/outdoor", "gift_shop", "glacier", "golf_course",
    "greenhouse/indoor", "greenhouse/outdoor", "grotto", "gymnasium/indoor", "hangar/indoor",
    "hangar/outdoor", "harbor", "hardware_store", "hayfield", "heliport", "highway", "home_office",
    "home_theater", "hospital", "hospital_room", "hot_spring", "hotel/outdoor", "hotel_room",
    "house", "hunting_lodge/outdoor", "ice_cream_parlor", "ice_floe", "ice_shelf",
    "ice_skating_rink/indoor", "ice_skating_rink/outdoor", "iceberg", "igloo", "industrial_area",
    "inn/outdoor", "islet", "jacuzzi/indoor", "jail_cell", "japanese_garden", "jewelry_shop",
    "junkyard", "kasbah", "kennel/outdoor", "kindergarden_classroom", "kitchen", "lagoon",
    "lake/natural", "landfill", "landing_deck", "laundromat", "lawn", "lecture_room",
    "legislative_chamber", "library/indoor", "library/outdoor", "lighthouse", "living_room",
    "loading_dock", "lobby", "lock_chamber", "locker_room", "mansion", "manufactured_home",
    "market/indoor", "market/outdoor", "marsh", "martial_arts_gym", "mausoleum", "medina",
    "mezzanine", "moat/water", "mosque/outdoor", "motel", "mountain", "mountain_path",
    "mountain_snowy", "movie_theater/indoor", "museum/indoor", "museum/outdoor", "music_studio",
    "natural_history_museum", "nursery", "nursing_home", "oast_house", "ocean", "office",
    "office_building", "office_cubicles", "oilrig", "operating_room", "orchard", "orchestra_pit",
    "pagoda", "palace", "pantry", "park", "parking_garage/indoor", "parking_garage/outdoor",
    "parking_lot", "pasture", "patio", "pavilion", "pet_shop", "pharmacy", "phone_booth",
    "physics_laboratory", "picnic_area", "pier", "pizzeria", "playground", "playroom", "plaza",
    "pond", "porch", "promenade", "pub/indoor", "racecourse", "raceway", "raft", "railroad_track",
    "rainforest", "reception", "recreation_room", "repair_shop", "residential_neighborhood",
    "restaurant", "restaurant_kitchen", "restaurant_patio", "rice_paddy", "river", "rock_arch",
    "roof_garden", "rope_bridge", "ruin", "runway", "sandbox", "sauna", "schoolhouse",
    "science_museum", "server_room", "shed", "shoe_shop", "shopfront", "shopping_mall/indoor",
    "shower", "ski_resort", "ski_slope", "sky", "skyscraper", "slum", "snowfield", "soccer_field",
    "stable", "stadium/baseball", "stadium/football", "stadium/soccer", "stage/indoor",
    "stage/outdoor", "staircase", "storage_room", "street", "subway_station/platform",
    "supermarket", "sushi_bar", "swamp", "swimming_hole", "swimming_pool/indoor",
    "swimming_pool/outdoor", "synagogue/outdoor", "television_room", "television_studio",
    "temple/asia", "throne_room", "ticket_booth", "topiary_garden", "tower", "toyshop",
    "train_interior", "train_station/platform", "tree_farm", "tree_house", "trench", "tundra",
    "underwater/ocean_deep", "utility_room", "valley", "vegetable_garden", "veterinarians_office",
    "viaduct", "village", "vineyard", "volcano", "volleyball_court/outdoor", "waiting_room",
    "water_park", "water_tower", "waterfall", "watering_hole", "wave", "wet_bar", "wheat_field",
    "wind_farm", "windmill", "yard", "youth_hostel", "zen_garden",
)

BRODEN_PLUS_OBJECT_PARTS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (2, (0, 82)),
    (
        5,
        (
            0, 5, 8, 24, 35, 40, 53, 59, 60, 61, 84, 88, 92, 93, 96, 97, 107, 113, 114, 122, 129,
            134, 142, 147,
        ),
    ),
    (6, (0, 1, 2, 3, 4, 6, 7, 9, 10, 11, 13, 14, 15, 16, 20)), (7, (0, 110)),
    (8, (0, 1, 8, 21, 28, 31, 52, 58, 64, 74, 112)),
    (9, (0, 59, 87, 94, 100, 103, 118, 120, 133, 135)), (10, (0, 66)),
    (12, (0, 1, 4, 20, 32, 33, 38, 43, 52, 64, 85)),
    (13, (0, 5, 8, 12, 19, 26, 30, 35, 37, 39, 62, 117, 146)), (15, (0, 46)),
    (16, (0, 5, 41, 47, 59, 70, 127, 144)), (18, (0, 22, 75, 78, 79, 102)),
    (19, (0, 1, 8, 21, 31, 58, 64, 69, 74)), (21, (0, 4, 22, 24, 28, 75, 80, 89, 99, 104)),
    (28, (0, 1, 27, 28, 48, 58, 105, 148, 151)), (29, (0, 1, 4, 20, 32, 33, 38, 43, 52, 64)),
    (32, (0, 8, 31, 58)), (33, (0, 25, 44)), (39, (0, 46)), (42, (0, 29, 77, 95, 112)),
    (43, (0, 1, 2, 3, 6, 7, 9, 10, 17, 18, 23)), (44, (0, 1, 4, 20, 32, 33, 38, 43, 52, 64, 126)),
    (46, (0, 149)), (47, (0, 4, 22, 78)), (48, (0, 27)), (49, (0, 1, 2, 3, 6, 7, 9, 10, 17, 23)),
    (54, (0, 83)), (56, (0, 28, 137, 139)), (57, (0, 12, 49, 55, 56)), (59, (0, 1, 31, 52, 69)),
    (61, (0, 22)), (67, (0, 1, 21, 31)), (68, (0, 12, 17, 25, 34, 45, 54, 125, 130, 132)),
    (69, (0, 1, 2, 3, 6, 10, 15, 17, 34, 42)), (70, (0, 5, 8, 24, 35, 40, 60, 61, 114)),
    (74, (0, 36)), (75, (0, 4, 22, 75, 89, 99)), (77, (0, 50, 51)), (80, (0, 97)),
    (81, (0, 5, 8, 12, 19, 30, 37, 39)), (82, (0, 21, 65, 72, 115, 136)), (83, (0, 12, 39)),
    (85, (0, 21, 31, 58, 64, 74)), (87, (0, 20, 33)), (89, (0, 28, 77, 116, 140)),
    (91, (0, 28, 109)), (95, (0, 36)), (98, (0, 1, 32)), (104, (0, 75, 90, 121)),
    (105, (0, 1, 2, 3, 6, 7, 10, 17, 18, 73)), (106, (0, 12, 19, 49)),
    (108, (0, 2, 19, 63, 119, 141)), (109, (0, 29, 95)), (110, (0, 57, 76, 77)), (111, (0, 8)),
    (113, (0, 8, 21)), (117, (0, 67, 71, 81, 86, 128)), (120, (0, 5, 8, 12, 19, 26, 30, 35)),
    (122, (0, 8, 36, 65, 111)), (127, (0, 4, 20, 28, 32, 131)), (131, (0, 1, 33, 43)),
    (141, (0, 1, 2, 3, 6, 7, 10, 17, 18, 91)), (142, (0, 1, 2, 3, 6, 7, 10, 17, 18, 91)),
    (143, (0, 69)), (145, (0, 25, 124)), (153, (0, 5, 12, 39)), (154, (0, 8, 65)),
    (160, (0, 8, 65)), (161, (0, 36)), (170, (0, 1, 28, 98, 101, 103, 108, 138)), (180, (0, 47)),
    (184, (0, 47)), (204, (0, 8, 21)), (213, (0, 8, 21)), (214, (0, 47)), (240, (0, 8)),
    (321, (0, 5)),
)
# fmt: on


# The metadata-only name the CSAIL checkpoint's config trains under (class lists, no images).
BRODEN_PLUS_METADATA_NAME = "broden_plus_csail"


def broden_plus_metadata() -> dict[str, Any]:
    """Multi-task metadata of Broden+ (no texture classes), enough to build and run a parser.

    Returns:
        dict with ``object_classes`` (335) and ``object_colors``, ``part_classes`` (427
        "<object>/<part>" names, 77 of them an object's "<object>/-"), ``object_parts`` (per
        object train id, its global part ids, "-" first; [] for objects without parts),
        ``material_classes`` (25) and ``material_colors``,
        ``scene_classes`` (365), ``texture_classes`` ([]), ``ignore_label`` and
        ``evaluator_type`` ("multitask").
    """
    objects = list(BRODEN_PLUS_OBJECTS[1:])
    part_classes: list[str] = []
    object_parts: list[list[int]] = [[] for _ in objects]
    for object_label, part_labels in sorted(BRODEN_PLUS_OBJECT_PARTS):
        name = BRODEN_PLUS_OBJECTS[object_label]
        start = len(part_classes)
        part_classes += [f"{name}/{BRODEN_PLUS_PARTS[p]}" for p in part_labels]
        object_parts[object_label - 1] = list(range(start, len(part_classes)))
    return {
        "object_classes": objects,
        "object_colors": [list(c) for c in distinct_colors(len(objects))],
        "part_classes": part_classes,
        "object_parts": object_parts,
        "material_classes": list(BRODEN_PLUS_MATERIALS[1:]),
        "material_colors": [list(c) for c in distinct_colors(len(BRODEN_PLUS_MATERIALS) - 1)],
        "scene_classes": list(BRODEN_PLUS_SCENES),
        "texture_classes": [],
        "ignore_label": BRODEN_PLUS_IGNORE_LABEL,
        "evaluator_type": "multitask",
    }
