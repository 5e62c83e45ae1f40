"""Words for generated item titles, tags and brands, grouped by category."""

TOP_CATEGORIES: dict[str, list[str]] = {
    "fashion": ["shoes", "jackets", "bags"],
    "beauty": ["skincare", "makeup", "fragrance"],
    "electronics": ["phones", "audio", "cameras"],
    "home": ["kitchen", "furniture", "lighting"],
    "sports": ["running", "cycling", "yoga"],
    "toys": ["puzzles", "dolls", "building"],
    "books": ["fiction", "cooking", "science"],
    "food": ["snacks", "coffee", "tea"],
}

NOUNS: dict[str, list[str]] = {
    "shoes": ["sneakers", "boots", "loafers"],
    "jackets": ["parka", "blazer", "windbreaker"],
    "bags": ["tote", "backpack", "clutch"],
    "skincare": ["serum", "moisturiser", "cleanser"],
    "makeup": ["lipstick", "mascara", "palette"],
    "fragrance": ["perfume", "cologne", "body mist"],
    "phones": ["smartphone", "phone case", "charger"],
    "audio": ["earbuds", "headphones", "speaker"],
    "cameras": ["mirrorless camera", "lens", "tripod"],
    "kitchen": ["skillet", "knife set", "kettle"],
    "furniture": ["armchair", "desk", "bookshelf"],
    "lighting": ["floor lamp", "led strip", "pendant light"],
    "running": ["running shoes", "running vest", "sports watch"],
    "cycling": ["helmet", "bike light", "cycling gloves"],
    "yoga": ["yoga mat", "yoga block", "leggings"],
    "puzzles": ["jigsaw", "brain teaser", "3d puzzle"],
    "dolls": ["fashion doll", "doll house", "plush doll"],
    "building": ["brick set", "magnetic tiles", "robot kit"],
    "fiction": ["novel", "thriller", "fantasy saga"],
    "cooking": ["cookbook", "baking guide", "recipe journal"],
    "science": ["astronomy book", "biology primer", "physics guide"],
    "snacks": ["chips", "trail mix", "protein bar"],
    "coffee": ["espresso beans", "cold brew", "drip bags"],
    "tea": ["green tea", "oolong", "herbal tea"],
}

# One adjective list per latent content direction: titles carry a readable trace of content.
ADJECTIVES: list[list[str]] = [
    ["classic", "timeless"],
    ["sporty", "active"],
    ["luxury", "premium"],
    ["budget", "value"],
    ["eco", "organic"],
    ["smart", "connected"],
    ["cozy", "soft"],
    ["bold", "vivid"],
    ["minimal", "clean"],
    ["retro", "vintage"],
    ["compact", "travel"],
    ["pro", "studio"],
    ["kids", "family"],
    ["outdoor", "rugged"],
    ["elegant", "refined"],
    ["fun", "playful"],
]

TAGS: dict[str, list[str]] = {
    "fashion": ["style", "new season", "streetwear", "office"],
    "beauty": ["glow", "cruelty free", "sensitive skin", "daily care"],
    "electronics": ["wireless", "fast charging", "hi-fi", "4k"],
    "home": ["cozy home", "space saving", "modern", "handmade"],
    "sports": ["fitness", "outdoor", "breathable", "training"],
    "toys": ["stem", "ages 3+", "gift idea", "creative"],
    "books": ["bestseller", "paperback", "award winner", "illustrated"],
    "food": ["organic", "gluten free", "gift box", "fair trade"],
}

BRANDS: dict[str, list[str]] = {
    top: [f"{top[:3].title()}{suffix}" for suffix in ("ora", "ex", "ique", "line", "co")]
    for top in TOP_CATEGORIES
}
