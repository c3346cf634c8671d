"""Natural-language titles and descriptions for the synthetic catalog.

Each topic has its own English vocabulary (title nouns, protagonists, plots, settings, moods, genre
labels), so a sentence encoder's embedding of an item's text carries the item's topics.
"""

from __future__ import annotations

import numpy as np

# name: (genre labels, title nouns, protagonists, plots, settings, moods); "|" separates phrases.
TOPICS: dict[str, tuple[str, str, str, str, str, str]] = {
    "space exploration": (
        "space exploration saga|science fiction voyage|interplanetary adventure",
        "Orbit|Nebula|Starship|Comet|Horizon|Eclipse|Galaxy|Launch|Satellite|Moonbase",
        "a rookie astronaut|a weary starship captain|a mission engineer|a stranded cosmonaut"
        "|a young navigator|a retired test pilot",
        "must repair a failing reactor before the crew runs out of air|charts a course to a"
        " newly discovered planet|receives a strange signal from beyond the solar system"
        "|races to land the first crewed ship on Europa|loses contact with mission control",
        "aboard a research station orbiting Saturn|on a mining colony on Mars|at the edge of"
        " the asteroid belt|on a generation ship drifting between stars|inside a lunar base",
        "awe-inspiring|tense|cerebral|breathtaking|lonely|visionary",
    ),
    "cooking": (
        "culinary story|food drama|cooking tale",
        "Kitchen|Recipe|Feast|Spice|Oven|Harvest|Table|Bakery|Menu|Saffron",
        "a self-taught pastry chef|a grandmother with a secret recipe|a burned-out line cook"
        "|a young baker|a street food vendor|a restaurant critic",
        "tries to earn a Michelin star with a menu of family recipes|opens a tiny noodle shop"
        "|competes in a brutal televised baking contest|rediscovers the joy of slow cooking"
        "|restores a failing bistro one dish at a time",
        "in a bustling Parisian kitchen|in a seaside trattoria in Sicily|at a night market in"
        " Bangkok|in a family bakery in Lyon|on a farm that grows its own produce",
        "mouth-watering|warm|delicious|gentle|flavorful|heartfelt",
    ),
    "detective mystery": (
        "detective mystery|whodunit|murder mystery",
        "Inspector|Alibi|Clue|Witness|Harbor|Verdict|Fingerprint|Suspect|Shadow|Cipher",
        "a retired inspector|a sharp-eyed private investigator|a junior detective"
        "|an amateur sleuth|a forensic pathologist|a small-town constable",
        "investigates a murder nobody else believes happened|follows a trail of forged letters"
        "|reopens a cold case from thirty years ago|must find the killer among the dinner"
        " guests|hunts a poisoner who leaves riddles at every crime scene",
        "in a rain-soaked harbor town|in a fog-bound English village|in a grand country"
        " manor|in the back streets of Edinburgh|on a snowbound night train",
        "tense|atmospheric|twisty|gripping|brooding|clever",
    ),
    "romance": (
        "romance|love story|romantic drama",
        "Heart|Kiss|Promise|Summer|Letters|Wedding|Valentine|Embrace|Rose|Moonlight",
        "two strangers|a shy florist|a widowed architect|a pair of childhood sweethearts"
        "|a jilted bride|a traveling violinist",
        "fall in love over a summer of handwritten letters|find their way back to each other"
        " after ten years apart|share one unforgettable night in the city|must choose between"
        " a safe marriage and a true love|meet again at a wedding",
        "in a sunlit Italian village|in a cozy bookshop in Paris|on a Greek island|in a"
        " small coastal town|in the streets of Lisbon",
        "tender|swoon-worthy|bittersweet|charming|passionate|romantic",
    ),
    "wartime history": (
        "war drama|historical war epic|wartime history",
        "Battalion|Trench|Front|Armistice|Resistance|Bunker|Regiment|Siege|Medal|Convoy",
        "a young infantry soldier|a field nurse|a resistance fighter|a codebreaker"
        "|a bomber pilot|a war correspondent",
        "survives the long winter siege of a besieged city|smuggles refugees across enemy"
        " lines|leads a battered platoon through the final offensive|decodes an enemy"
        " cipher that could end the war|returns home to a country changed by war",
        "on the Western Front in 1916|in occupied France during the Second World War|during"
        " the Battle of Britain|in the trenches of the Somme|in the ruins of Berlin in 1945",
        "harrowing|sweeping|unflinching|moving|brutal|historical",
    ),
    "jazz music": (
        "jazz music drama|musical biography|jazz story",
        "Saxophone|Blues|Trumpet|Swing|Melody|Rhythm|Nightclub|Improvisation|Bebop|Encore",
        "a gifted jazz trumpeter|a struggling saxophonist|a nightclub singer|a bebop pianist"
        "|a young drummer|a legendary bandleader",
        "chases the perfect solo night after night|forms a quartet that changes the sound of"
        " jazz|fights addiction on the road to a career-defining record|plays one last gig"
        " before the club closes|improvises a song that becomes a standard",
        "in a smoky Harlem nightclub in the 1950s|in the jazz clubs of New Orleans|on a tour"
        " bus across the American South|in a Chicago recording studio|in a Paris jazz cellar",
        "soulful|swinging|melancholy|rhythmic|smoky|vibrant",
    ),
    "epic fantasy": (
        "epic fantasy|sword and sorcery tale|fantasy quest",
        "Dragon|Crown|Sword|Throne|Sorcerer|Kingdom|Prophecy|Rune|Citadel|Wizard",
        "an orphaned stable girl|an exiled prince|an apprentice wizard|a disgraced knight"
        "|a young dragon rider|an elven archer",
        "must destroy a cursed crown before the dark lord returns|sets out on a quest to"
        " recover a stolen dragon egg|discovers a hidden gift for ancient magic|unites"
        " feuding clans against an army of the undead|fulfills a forgotten prophecy",
        "in a kingdom of floating castles|across the frozen northern wastes|in an enchanted"
        " forest ruled by elves|beneath a mountain of sleeping dragons|in a realm of wizards",
        "sweeping|magical|mythic|enchanting|heroic|legendary",
    ),
    "supernatural horror": (
        "supernatural horror|ghost story|horror tale",
        "Haunting|Ghost|Cellar|Curse|Nightmare|Coffin|Exorcist|Phantom|Seance|Crypt",
        "a grieving widow|a skeptical paranormal investigator|a family of five|a night-shift"
        " caretaker|a teenage babysitter|a parish priest",
        "is terrorized by whispers coming from behind the walls|performs an exorcism that"
        " goes horribly wrong|realizes the house is feeding on their fear|is stalked by a"
        " demon summoned at a seance|wakes to find the dead walking the halls",
        "in an abandoned Victorian mansion|in a cursed lakeside cabin|in a crumbling asylum"
        "|in a remote village with a terrible secret|in a haunted lighthouse",
        "terrifying|creepy|chilling|eerie|blood-curdling|sinister",
    ),
    "sports underdog": (
        "sports drama|underdog sports story|championship tale",
        "Champion|Season|Goal|Underdog|Playoff|Stadium|Comeback|Rookie|Trophy|Coach",
        "a washed-up boxing coach|a small-town basketball team|a teenage sprinter|an aging"
        " quarterback|a hockey goalie|a rookie pitcher",
        "leads a team of misfits to the state championship|trains for one last title fight"
        "|battles injury to make the Olympic team|turns a losing season into a legendary"
        " comeback|gets one final shot at the championship game",
        "in a blue-collar steel town|at a struggling high school in Texas|in the minor"
        " leagues|at the Olympic trials|in a packed football stadium",
        "inspiring|uplifting|rousing|triumphant|hard-hitting|spirited",
    ),
    "mountain adventure": (
        "wilderness survival adventure|mountaineering story|outdoor adventure",
        "Summit|Avalanche|Ridge|Glacier|Peak|Wilderness|Trail|Blizzard|Canyon|Expedition",
        "a veteran mountaineer|a lost hiker|a search-and-rescue pilot|a pair of climbers"
        "|a park ranger|a young explorer",
        "attempts a winter ascent of a deadly peak|survives alone after a plane crash in the"
        " mountains|leads a rescue through a raging blizzard|crosses a glacier with failing"
        " supplies|treks hundreds of miles through the wild to find home",
        "in the Himalayas|on the slopes of Denali|in the Alaskan backcountry|in the Swiss"
        " Alps|in the Patagonian wilderness",
        "gripping|breathless|rugged|harrowing|majestic|adventurous",
    ),
    "tech startup": (
        "startup drama|business story|tech industry satire",
        "Startup|Algorithm|Unicorn|Venture|Code|Pitch|Launch|Network|Disruption|Server",
        "a college dropout programmer|a ruthless venture capitalist|two cofounders|a"
        " whistleblowing engineer|an ambitious product manager|a hacker",
        "builds a billion-dollar app in a garage|fights a hostile takeover by former"
        " partners|exposes a data scandal at a tech giant|pitches investors with a"
        " product that does not work yet|races to ship the software before the money runs out",
        "in Silicon Valley|in a cramped San Francisco apartment|in a glass tower in Seattle"
        "|at a startup accelerator|in the boardrooms of a tech giant",
        "sharp|satirical|fast-paced|ambitious|witty|cutthroat",
    ),
    "wildlife and nature": (
        "nature documentary|wildlife story|natural history film",
        "Wilderness|River|Savanna|Migration|Forest|Reef|Pride|Wolf|Eagle|Rainforest",
        "a family of elephants|a pack of gray wolves|a lone snow leopard|a field biologist"
        "|a young lion cub|a colony of penguins",
        "follows the great migration across the plains|struggles to survive a harsh winter"
        "|protects its young from predators|tracks endangered species before they vanish"
        "|journeys thousands of miles to ancient breeding grounds",
        "on the African savanna|in the Amazon rainforest|in the Arctic tundra|on the Great"
        " Barrier Reef|in the forests of Yellowstone",
        "stunning|majestic|intimate|breathtaking|wild|poignant",
    ),
    "heist crime": (
        "heist thriller|crime caper|gangster story",
        "Heist|Vault|Getaway|Diamond|Job|Safecracker|Score|Casino|Double-Cross|Ransom",
        "a retired safecracker|a crew of professional thieves|a getaway driver|a con artist"
        "|a mob accountant|a crooked cop",
        "plans one last job to rob an unbreakable casino vault|steals a priceless diamond"
        " under the nose of the police|is double-crossed by the crew after the score"
        "|launders money for the mob|pulls off an elaborate bank robbery",
        "in Las Vegas|in the criminal underworld of London|in 1970s New York|on the French"
        " Riviera|in the back rooms of a Chicago casino",
        "slick|stylish|suspenseful|gritty|thrilling|cunning",
    ),
    "family comedy": (
        "family comedy|comedy|lighthearted romp",
        "Vacation|Holiday|Neighbors|Road Trip|Reunion|Babysitter|Pajamas|Picnic|Birthday|Suburbia",
        "an accident-prone dad|three mischievous siblings|a chaotic extended family|a"
        " clumsy babysitter|a pair of bickering grandparents|a talking dog",
        "turns a simple road trip into a hilarious disaster|hosts the holiday dinner from"
        " chaos|tries to survive a week without screens|accidentally swaps lives with the"
        " neighbors|plans a surprise party that goes hilariously wrong",
        "in a sleepy suburb|at a rundown summer camp|on a cross-country road trip|in a"
        " crowded beach house|at a chaotic family reunion",
        "hilarious|silly|heartwarming|goofy|zany|feel-good",
    ),
    "medical drama": (
        "medical drama|hospital drama|doctor story",
        "Surgeon|Pulse|Diagnosis|Ward|Scalpel|Emergency|Clinic|Transplant|Recovery|Cure",
        "a first-year surgical resident|a veteran emergency room nurse|a brilliant"
        " diagnostician|a country doctor|a paramedic|a pediatric oncologist",
        "fights to save patients during a deadly epidemic|performs a risky experimental"
        " transplant|uncovers malpractice at a prestigious hospital|treats victims of a"
        " disaster through one endless night|diagnoses a mysterious illness",
        "in a busy city emergency room|in a rural clinic|in a field hospital|in an intensive"
        " care unit|at a prestigious teaching hospital",
        "intense|compassionate|emotional|high-stakes|clinical|gripping",
    ),
    "courtroom drama": (
        "courtroom drama|legal thriller|trial drama",
        "Verdict|Jury|Testimony|Trial|Appeal|Objection|Counsel|Justice|Evidence|Gavel",
        "a young public defender|a ruthless prosecutor|a disbarred lawyer|a juror with"
        " doubts|a wrongfully convicted man|a corporate attorney",
        "defends a client everyone believes is guilty|exposes a cover-up in a landmark case"
        "|fights to overturn a wrongful conviction|cross-examines a lying witness|takes on a"
        " powerful chemical company in court",
        "in a crowded city courthouse|before the Supreme Court|in a small Southern town"
        "|inside a jury room|in the offices of a powerful law firm",
        "gripping|tense|thought-provoking|riveting|principled|dramatic",
    ),
    "art and painting": (
        "art drama|biography of a painter|story about art",
        "Canvas|Portrait|Brushstroke|Gallery|Masterpiece|Easel|Fresco|Sketch|Palette|Muse",
        "a struggling painter|an art forger|a museum curator|a young sculptor|a reclusive"
        " portrait artist|an art restorer",
        "paints the masterpiece that defines a generation|forges a lost Vermeer|uncovers"
        " the hidden history of a stolen portrait|opens a gallery for outsider artists"
        "|restores a damaged Renaissance fresco",
        "in bohemian Montmartre|in Renaissance Florence|in the galleries of New York|in an"
        " artist colony in Provence|in a dusty studio in Amsterdam",
        "luminous|contemplative|colorful|elegant|evocative|poetic",
    ),
    "sailing and the sea": (
        "seafaring adventure|ocean voyage|maritime story",
        "Voyage|Tide|Anchor|Lighthouse|Mariner|Sail|Harbor|Current|Schooner|Storm",
        "a solo sailor|a whaling ship crew|an old lighthouse keeper|a young deckhand|a"
        " fishing boat captain|a marine biologist",
        "sails alone around the world|survives a shipwreck on a deserted island|braves a"
        " hurricane in the open ocean|searches for a lost treasure galleon|hunts a white"
        " whale across the seas",
        "on the North Atlantic|on a tall ship bound for the South Seas|in a remote fishing"
        " village|in the Caribbean|on a storm-battered island",
        "salty|windswept|adventurous|stormy|sweeping|seafaring",
    ),
    "western frontier": (
        "western|frontier drama|cowboy story",
        "Outlaw|Sheriff|Saloon|Frontier|Canyon|Stagecoach|Bounty|Ranch|Rifle|Mustang",
        "a lone gunslinger|a frontier sheriff|a bounty hunter|a homesteading widow|a cattle"
        " rancher|a young cowboy",
        "hunts the outlaw gang that burned the homestead|defends a frontier town from"
        " bandits|drives a herd of cattle across a thousand miles of desert|faces a gunfight"
        " at high noon|collects a bounty on a notorious train robber",
        "in the dusty Arizona territory|on the Texas plains|in a lawless frontier town|along"
        " the Oregon Trail|in the badlands of Wyoming",
        "gritty|dusty|classic|rugged|sun-scorched|stoic",
    ),
    "cold war espionage": (
        "spy thriller|espionage story|Cold War thriller",
        "Agent|Cipher|Defector|Dossier|Embassy|Mole|Checkpoint|Codename|Safehouse|Surveillance",
        "a veteran MI6 agent|a KGB defector|a CIA analyst|a double agent|a diplomat's"
        " interpreter|a rookie spy",
        "hunts a mole inside the intelligence service|smuggles a defector across the Berlin"
        " Wall|steals nuclear secrets from a Soviet embassy|is betrayed by the agency"
        "|uncovers a plot to start a war",
        "in divided Berlin|in Cold War Moscow|in the embassies of Vienna|in 1960s"
        " Istanbul|behind the Iron Curtain",
        "taut|paranoid|suspenseful|cerebral|shadowy|intricate",
    ),
}

TOPIC_NAMES = list(TOPICS)
_PARTS = [
    {name: [p for p in spec[k].split("|")] for name, spec in TOPICS.items()} for k in range(6)
]
LABELS, NOUNS, PROTAGONISTS, PLOTS, SETTINGS, MOODS = _PARTS

MEDIA = ["film", "novel", "series", "miniseries", "audiobook", "film", "novel"]
_NOUN_ENDINGS = {"story", "tale", "documentary", "film", "biography", "voyage", "romp"}
TITLE_ADJECTIVES = (
    "Silent|Crimson|Last|Hidden|Broken|Golden|Distant|Midnight|Burning|Frozen|Endless|Secret"
    "|Wild|Quiet|Lost|Iron|Velvet|Hollow|Bright|Final|Forgotten|Restless|Scarlet|Fading|Long"
).split("|")
PLACES = (
    "Blackwater|Port Ellis|Elm Hollow|Ravensworth|Marlow Bay|Cedar Falls|Ashford|Kingsbridge"
    "|Willow Creek|Stonehaven|Greyport|Oakridge|Larkspur|Dunmore|Brighton Row|Redfield"
).split("|")
TITLE_NAMES = "Anna|Jack|Clara|Leo|Mira|Sam|Nora|Eli|Rosa|Theo|Ada|Felix".split("|")
TITLE_PATTERNS = [
    "The {adj} {noun}",
    "{noun} of {place}",
    "The Last {noun} of {place}",
    "Beyond the {adj} {noun}",
    "{name} and the {adj} {noun}",
    "The {noun} at {place}",
    "A {noun} for {name}",
    "Under the {adj} {noun}",
    "{adj} {noun}",
    "The {noun} of {place}",
    "Return to the {adj} {noun}",
    "{name}'s {noun}",
    "The {adj} {noun} of {place}",
    "After the {adj} {noun}",
]
SENTENCE_PATTERNS = [
    "{A_mood} {label} about {prot} who {plot}, set {setting}.",
    "{Prot} {plot} in this {mood} {label} set {setting}.",
    "Set {setting}, this {mood} {label} follows {prot} who {plot}.",
    "{Setting}, {prot} {plot}. {A_mood} {label}.",
    "In this {mood} {label}, {prot} {plot} {setting}.",
    "{Prot} {plot}: {a_mood} {label} set {setting}.",
]
SECOND_PATTERNS = [
    "Along the way, {prot} {plot}.",
    "A parallel story follows {prot} who {plot} {setting}.",
    "It is also {a_mood} {label}, as {prot} {plot}.",
    "Meanwhile, {prot} {plot} {setting}.",
]
_ROMAN = ["", " II", " III", " IV", " V", " VI", " VII", " VIII", " IX", " X"]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(options: list[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _phrases(topic: str, u: np.ndarray) -> dict[str, str]:
    prot, setting = _pick(PROTAGONISTS[topic], u[2]), _pick(SETTINGS[topic], u[4])
    mood = _pick(MOODS[topic], u[1])
    a_mood = ("an " if mood[0] in "aeiou" else "a ") + mood
    label = _pick(LABELS[topic], u[0])
    if label.rsplit(" ", 1)[-1] not in _NOUN_ENDINGS:
        label += " " + _pick(MEDIA, u[5])
    return {
        "label": label,
        "mood": mood,
        "a_mood": a_mood,
        "A_mood": _cap(a_mood),
        "prot": prot,
        "Prot": _cap(prot),
        "plot": _pick(PLOTS[topic], u[3]),
        "setting": setting,
        "Setting": _cap(setting),
    }


def item_texts(
    primary: np.ndarray, secondary: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """(titles, texts) for items with topic indices `primary` and `secondary` (-1: none).

    Titles repeat only as numbered sequels ("The Silent Harbor II").
    """
    n = len(primary)
    draws = rng.random((n, 20))
    titles, texts, seen = [], [], {}
    for i in range(n):
        u, topic = draws[i], TOPIC_NAMES[int(primary[i])]
        title_topic = topic if secondary[i] < 0 or u[16] < 0.7 else TOPIC_NAMES[secondary[i]]
        title = _pick(TITLE_PATTERNS, u[6]).format(
            adj=_pick(TITLE_ADJECTIVES, u[7]),
            noun=_pick(NOUNS[title_topic], u[8]),
            place=_pick(PLACES, u[9]),
            name=_pick(TITLE_NAMES, u[10]),
        )
        count = seen.get(title, 0)
        seen[title] = count + 1
        if count:
            title += _ROMAN[count] if count < len(_ROMAN) else f": Part {count + 1}"
        text = _pick(SENTENCE_PATTERNS, u[11]).format(**_phrases(topic, u))
        if secondary[i] >= 0:
            other = _phrases(TOPIC_NAMES[int(secondary[i])], draws[i, [12, 13, 14, 15, 17, 18]])
            text += " " + _pick(SECOND_PATTERNS, u[19]).format(**other)
        elif u[19] < 0.5:
            other = _phrases(topic, (u[:6] + 0.5) % 1.0)  # other phrases of the same topic
            text += " " + _pick(SECOND_PATTERNS[:2], u[16]).format(**other)
        titles.append(title)
        texts.append(f"{title}. {text}")
    return titles, texts
