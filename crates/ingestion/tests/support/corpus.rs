//! The retrieval fixture: 200 markdown documents of generated prose in four subject areas
//! (towns, products, recipes, software tools) and 50 questions whose answering document is
//! known. Deterministic: the same corpus in every run, built from word lists and sentence
//! patterns, with shared vocabulary across documents so that retrieval has to find the
//! distinguishing words. Shared by the retrieval-quality test and the RAG benchmark.

#![allow(dead_code)]

pub struct Doc {
    pub path: String,
    pub text: String,
}

pub struct Question {
    pub text: String,
    pub answer: String,
}

use super::synth::Rng;

const SYLLABLES: &[&str] = &[
    "var", "nel", "os", "ka", "bri", "dun", "mor", "tal", "lis", "ven", "ar", "go", "thi", "pel",
    "rus", "cam", "dor", "fen", "hal", "ith", "jor", "kel", "lun", "mar", "nor", "quen", "sel",
    "tor", "ul", "wyn",
];

/// A name not given before in this corpus.
fn name(r: &mut Rng, seen: &mut std::collections::HashSet<String>) -> String {
    loop {
        let n = r.range(2, 3);
        let mut s: String = (0..n).map(|_| r.pick(SYLLABLES)).collect();
        s[..1].make_ascii_uppercase();
        if seen.insert(s.to_lowercase()) {
            return s;
        }
    }
}

const RIVERS: &[&str] = &[
    "Amber", "Silver", "Heron", "Willow", "Granite", "Otter", "Salt", "Cedar", "Falcon", "Mist",
];
const INDUSTRIES: &[&str] = &[
    "glassblowing",
    "shipbuilding",
    "wool weaving",
    "copper mining",
    "cheese making",
    "clock making",
    "paper milling",
    "salt harvesting",
    "tea growing",
    "boat repair",
];
const FESTIVALS: &[&str] = &[
    "lantern", "harvest", "kite", "bell", "candle", "boat", "apple", "snow", "music", "flower",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LANDMARKS: &[&str] = &[
    "stone bridge",
    "round tower",
    "covered market",
    "old lighthouse",
    "observatory",
    "abbey ruins",
    "windmill",
    "clock tower",
    "botanical garden",
    "railway viaduct",
];
const DISHES: &[&str] = &[
    "smoked eel",
    "barley soup",
    "honey cake",
    "lamb stew",
    "mushroom pie",
    "plum dumplings",
    "trout with almonds",
    "rye bread",
    "pickled herring",
    "chestnut porridge",
];

const MATERIALS: &[&str] = &[
    "aluminium",
    "oak",
    "carbon fibre",
    "recycled plastic",
    "stainless steel",
    "bamboo",
    "ceramic",
    "walnut",
    "titanium",
    "cork",
];
const PRODUCT_KINDS: &[&str] = &[
    "desk lamp",
    "backpack",
    "water bottle",
    "office chair",
    "bicycle helmet",
    "kettle",
    "headphones",
    "tent",
    "coffee grinder",
    "standing desk",
];
const FEATURES: &[&str] = &[
    "a magnetic charging dock",
    "a lifetime warranty",
    "a foldable frame",
    "a waterproof coating",
    "a noise-cancelling mode",
    "a built-in thermometer",
    "an adjustable strap",
    "a solar panel",
    "a quiet motor",
    "a child lock",
];
const COLOURS: &[&str] = &[
    "forest green",
    "charcoal",
    "sand",
    "navy blue",
    "coral",
    "slate grey",
    "mustard",
    "ivory",
    "burgundy",
    "teal",
];

const INGREDIENTS: &[&str] = &[
    "saffron",
    "lentils",
    "coconut milk",
    "smoked paprika",
    "fennel",
    "buckwheat",
    "tamarind",
    "goat cheese",
    "pistachios",
    "ginger",
];
const METHODS: &[&str] = &[
    "slow roasted",
    "steamed",
    "braised",
    "grilled over charcoal",
    "baked in clay",
    "pan fried",
    "poached",
    "smoked",
    "fermented",
    "stir fried",
];
const COURSES: &[&str] = &[
    "breakfast",
    "starter",
    "main course",
    "dessert",
    "side dish",
    "snack",
    "soup",
    "salad",
    "picnic dish",
    "holiday feast",
];

const LANGUAGES: &[&str] = &[
    "Rust",
    "Python",
    "Go",
    "TypeScript",
    "Kotlin",
    "Haskell",
    "Elixir",
    "Zig",
    "OCaml",
    "Swift",
];
const PURPOSES: &[&str] = &[
    "log shipping",
    "image resizing",
    "schema migration",
    "load testing",
    "secret rotation",
    "dependency auditing",
    "feature flags",
    "metrics aggregation",
    "queue monitoring",
    "backup verification",
];
const LICENSES: &[&str] = &["MIT", "Apache 2.0", "BSD 3-Clause", "MPL 2.0", "GPL 3.0"];

const FILLER: &[&str] = &[
    "Visitors often remark on how friendly the people are.",
    "Many reviews mention that the experience exceeded expectations.",
    "The details below were collected from several public sources.",
    "Opinions differ, but most agree it is worth the effort.",
    "Over the years the story has been retold in many versions.",
    "Newcomers are advised to read the whole page before deciding.",
    "It remains popular with families and with people travelling alone.",
    "Some of the history is uncertain and still debated by experts.",
];

pub fn corpus() -> (Vec<Doc>, Vec<Question>) {
    let mut r = Rng(0x5EED_1234_ABCD_0001);
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::new();
    // (question, answer, the attributes that identify the answer)
    let mut questions: Vec<(Question, String)> = Vec::new();
    // How many documents have each identifying attribute combination.
    let mut combos: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for i in 0..50 {
        let town = name(&mut r, &mut seen);
        let river = r.pick(RIVERS);
        let industry = r.pick(INDUSTRIES);
        let festival = r.pick(FESTIVALS);
        let month = r.pick(MONTHS);
        let landmark = r.pick(LANDMARKS);
        let dish = r.pick(DISHES);
        let founded = r.range(1100, 1890);
        let people = r.range(2, 90) * 1000;
        let text = format!(
            "# {town}\n\n{town} is a town of about {people} people on the {river} river. {f1}\n\n## History\n\nThe settlement was founded in {founded}, when traders built a ferry crossing. The {landmark} dates from the same century and still stands near the square. {f2}\n\n## Economy\n\nFor generations the main trade has been {industry}, and most families have worked in it at some point. Workshops line the streets leading to the river.\n\n## Culture\n\nEvery {month} the town holds its {festival} festival, which draws crowds from the whole region. The local speciality is {dish}, served in every inn. {f3}\n",
            f1 = r.pick(FILLER),
            f2 = r.pick(FILLER),
            f3 = r.pick(FILLER),
        );
        let path = format!("towns/{}.md", town.to_lowercase());
        if i % 4 == 0 {
            questions.push((
                Question {
                    text: format!("Which town celebrates a {festival} festival in {month}?"),
                    answer: path.clone(),
                },
                format!("town {festival} {month}"),
            ));
        } else if i % 4 == 1 {
            questions.push((
                Question {
                    text: format!("When was {town} founded and what old building survives there?"),
                    answer: path.clone(),
                },
                town.clone(),
            ));
        }
        *combos
            .entry(format!("town {festival} {month}"))
            .or_default() += 1;
        docs.push(Doc { path, text });
    }
    for i in 0..50 {
        let brand = name(&mut r, &mut seen);
        let kind = r.pick(PRODUCT_KINDS);
        let material = r.pick(MATERIALS);
        let feature = r.pick(FEATURES);
        let colour = r.pick(COLOURS);
        let price = r.range(19, 899);
        let weight = r.range(2, 90) * 50;
        let text = format!(
            "# {brand} {kind}\n\nThe {brand} {kind} is made of {material} and weighs {weight} grams. {f1}\n\n## Design\n\nIt comes in {colour} and has {feature}. The designers focused on durability and easy repair.\n\n## Price and warranty\n\nThe recommended retail price is {price} euros. Spare parts can be ordered from the manufacturer. {f2}\n",
            f1 = r.pick(FILLER),
            f2 = r.pick(FILLER),
        );
        let path = format!(
            "products/{}-{}.md",
            brand.to_lowercase(),
            kind.replace(' ', "-")
        );
        if i % 4 == 0 {
            questions.push((
                Question {
                    text: format!("How much does the {brand} {kind} cost?"),
                    answer: path.clone(),
                },
                brand.clone(),
            ));
        } else if i % 4 == 2 {
            questions.push((
                Question {
                    text: format!("Which {kind} is made of {material} and comes in {colour}?"),
                    answer: path.clone(),
                },
                format!("product {kind} {material} {colour}"),
            ));
        }
        *combos
            .entry(format!("product {kind} {material} {colour}"))
            .or_default() += 1;
        docs.push(Doc { path, text });
    }
    for i in 0..50 {
        let cook = name(&mut r, &mut seen);
        let ingredient = r.pick(INGREDIENTS);
        let second = r.pick(INGREDIENTS);
        let method = r.pick(METHODS);
        let course = r.pick(COURSES);
        let minutes = r.range(2, 24) * 5;
        let serves = r.range(2, 8);
        let title = format!("{cook}'s {method} {ingredient}");
        let text = format!(
            "# {title}\n\nA {course} that serves {serves}. It takes about {minutes} minutes from start to finish. {f1}\n\n## Ingredients\n\n- {ingredient}\n- {second}\n- salt and pepper\n- olive oil\n\n## Method\n\nThe {ingredient} is {method} until tender, then combined with the {second}. Season to taste and rest for a few minutes before serving. {f2}\n",
            f1 = r.pick(FILLER),
            f2 = r.pick(FILLER),
        );
        let path = format!(
            "recipes/{}-{}.md",
            cook.to_lowercase(),
            ingredient.replace(' ', "-")
        );
        if i % 4 == 1 {
            questions.push((
                Question {
                    text: format!("How long does {cook}'s {ingredient} recipe take?"),
                    answer: path.clone(),
                },
                cook.clone(),
            ));
        } else if i % 4 == 3 {
            questions.push((
                Question {
                    text: format!("Which {course} combines {ingredient} with {second}?"),
                    answer: path.clone(),
                },
                format!("recipe {course} {ingredient} {second}"),
            ));
        }
        *combos
            .entry(format!("recipe {course} {ingredient} {second}"))
            .or_default() += 1;
        docs.push(Doc { path, text });
    }
    for i in 0..50 {
        let tool = name(&mut r, &mut seen).to_lowercase();
        let language = r.pick(LANGUAGES);
        let purpose = r.pick(PURPOSES);
        let license = r.pick(LICENSES);
        let version = format!("{}.{}.{}", r.range(0, 4), r.range(0, 20), r.range(0, 9));
        let stars = r.range(1, 40) * 100;
        let text = format!(
            "# {tool}\n\n`{tool}` is a command-line tool for {purpose}, written in {language}. {f1}\n\n## Installation\n\n```sh\ninstall {tool}@{version}\n```\n\nThe current release is {version}. It is published under the {license} license.\n\n## Community\n\nThe project has about {stars} stars and a small group of maintainers who review contributions weekly. {f2}\n",
            f1 = r.pick(FILLER),
            f2 = r.pick(FILLER),
        );
        let path = format!("tools/{tool}.md");
        if i % 4 == 2 {
            questions.push((
                Question {
                    text: format!("Which {language} tool helps with {purpose}?"),
                    answer: path.clone(),
                },
                format!("tool {language} {purpose}"),
            ));
        } else if i % 4 == 3 {
            questions.push((
                Question {
                    text: format!("What license and release version does {tool} have?"),
                    answer: path.clone(),
                },
                tool.clone(),
            ));
        }
        *combos
            .entry(format!("tool {language} {purpose}"))
            .or_default() += 1;
        docs.push(Doc { path, text });
    }
    // Keep only the questions with one right answer in the whole corpus.
    let questions = questions
        .into_iter()
        .filter(|(_, key)| combos.get(key).is_none_or(|n| *n == 1))
        .map(|(q, _)| q)
        .collect();
    (docs, questions)
}
