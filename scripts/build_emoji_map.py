"""Build ``mll_registry/demo/emoji_synsets.tsv``: single-code-point emoji -> WordNet 3.0 noun synset.

Steps (deterministic; re-running gives the identical file):

1. take every single-code-point emoji of the ``emoji`` package (a trailing U+FE0F is stripped;
   ZWJ sequences, skin-tone modifiers, flags/regional indicators and keycaps are excluded) that
   every image style (noto, symbola, emojione, twemoji) can render;
2. propose a *candidate* synset: the first WordNet noun sense of the CLDR name, else of trimmed
   variants of it (generic words such as "face"/"button" dropped, leading adjectives dropped...);
3. apply the curated ``OVERRIDES`` table (CLDR name -> synset id, or ``None`` to drop);
   without an override a candidate is kept only if its lexname is a concrete family;
4. assign a coarse ``group``: ``GROUP_OVERRIDES``, else the first ``HYPERNYM_GROUPS`` rule that
   matches a hypernym, else the synset's lexname (``LEXNAME_GROUP``);
5. check that each synset is used once (a clash is an error to fix in ``OVERRIDES``) and write
   the TSV sorted by codepoint; print the counts per group.

Run::

    MLL_DATA_DIR=/tmp/mlldata .venv/bin/python scripts/build_emoji_map.py
    MLL_DATA_DIR=/tmp/mlldata .venv/bin/python scripts/build_emoji_map.py --dump   # review table
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import emoji

from mll_registry.demo.sources import available
from mll_registry.graph.wordnet import wn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "mll_registry" / "demo" / "emoji_synsets.tsv"
STYLES = ("noto", "symbola", "emojione", "twemoji")
HEADER = "codepoint\temoji\tname\tsynset\tgroup"
GROUPS = ("animal", "plant", "food", "object", "clothing", "vehicle", "place", "nature", "sport",
          "music", "symbol", "body")

# Words that never name the depicted concept by themselves.
GENERIC = {"face", "with", "button", "symbol", "sign", "mark", "of", "the", "and", "a", "in",
           "on", "emoji", "modifier", "selector"}
# Leading qualifiers dropped to reach the head noun ("red apple" -> "apple").
ADJECTIVES = {
    "red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "pink",
    "grey", "gray", "light", "dark", "large", "small", "medium", "big", "little", "new", "old",
    "hot", "cold", "full", "empty", "open", "closed", "front", "facing", "up", "down", "left",
    "right", "baby", "heavy", "japanese", "wilted", "fallen", "shaved", "roasted", "cooked",
    "fried", "sparkling", "spiral", "rolled-up", "ballot", "card", "clinking", "pouring",
    "crossed", "musical", "national", "ringed", "shooting", "tropical", "sweet", "glowing",
    "growing", "beating", "broken", "two", "four", "high", "round", "framed", "stuffed",
}

# Lexnames kept by default (a candidate in any other lexname needs an explicit override).
CONCRETE_LEXNAMES = {"noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.object",
                     "noun.phenomenon", "noun.body", "noun.substance"}

# Default group per lexname.
LEXNAME_GROUP = {
    "noun.animal": "animal", "noun.plant": "plant", "noun.food": "food",
    "noun.artifact": "object", "noun.object": "nature", "noun.phenomenon": "nature",
    "noun.body": "body", "noun.substance": "object", "noun.location": "place",
    "noun.shape": "symbol", "noun.communication": "symbol", "noun.act": "sport",
}

# Hypernym rules, tried in order before the lexname default (first match wins).
HYPERNYM_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("music", frozenset({"musical_instrument.n.01", "musical_notation.n.01"})),
    ("sport", frozenset({"sports_equipment.n.01", "game_equipment.n.01", "ball.n.01"})),
    ("vehicle", frozenset({"conveyance.n.03", "craft.n.02"})),
    ("clothing", frozenset({"clothing.n.01", "footwear.n.01", "footwear.n.02", "jewelry.n.01",
                            "headdress.n.01", "bag.n.04"})),
    ("place", frozenset({"building.n.01", "structure.n.01", "way.n.06", "geographic_point.n.01",
                         "tract.n.01"})),
    ("symbol", frozenset({"emblem.n.01", "signal.n.01", "sign.n.02"})),
)

# --- curated tables -------------------------------------------------------------------------
# CLDR name (lowercase, spaces) -> synset id, or None to drop the emoji.
OVERRIDES: dict[str, str | None] = {
    # --- symbols, time, weather (U+00A9 .. U+2B55) ---
    "right arrow": "arrow.n.01",            # one arrow kept as a plain visual symbol
    "right arrow curving down": None,        # first sense down.n.01 is feathers
    "fast down button": None,                # down.n.01 (feathers)
    "next track button": None,
    "last track button": None,
    "hourglass not done": "sandglass.n.01",  # hourglass.n.01 taken by "hourglass done"
    "keyboard": "computer_keyboard.n.01",
    "timer clock": "timer.n.01",
    "black large square": "square.n.01",
    "cloud": "cloud.n.02",                   # cloud.n.01 is any visible particle mass (smoke, dust)
    "umbrella with rain drops": None,
    "hot beverage": "coffee.n.01",           # steaming cup; tea goes to the teacup emoji
    "orthodox cross": "cross.n.03",          # cross as an emblem; latin cross keeps latin_cross.n.01
    "spade suit": None,                      # suit.n.01 is clothing; card suits dropped
    "club suit": None,
    "heart suit": None,
    "diamond suit": None,
    "hot springs": "hot_spring.n.01",        # first sense is the town in Arkansas
    "balance scale": "balance.n.12",         # scale.n.01 is "an ordered reference standard"
    "fleur-de-lis": "fleur-de-lis.n.02",     # first sense is the iris plant
    "high voltage": "thunderbolt.n.01",      # the lightning-bolt glyph
    "baseball": "baseball.n.02",             # the ball, not the game
    "snowman without snow": None,
    "sun behind cloud": None,
    "cloud with lightning and rain": "thunderstorm.n.01",
    "ophiuchus": None,                       # constellation / zodiac
    "pick": "pick.n.07",                     # pickaxe, not "choice"
    "rescue worker’s helmet": "helmet.n.02",  # helmet.n.01 is armour
    "chains": "chain.n.03",                  # irons.n.01 are shackles
    "church": "church.n.02",                 # church.n.01 is the group of Christians
    "umbrella on ground": "parasol.n.01",    # beach umbrella; first candidate land.n.04
    "flag in hole": "cup.n.07",              # the hole on a golf green
    "person bouncing ball": None,
    "fuel pump": "gas_pump.n.01",
    "victory hand": None,
    "writing hand": None,
    "check mark": "check_mark.n.01",
    "star of david": "star_of_david.n.01",
    "eight-spoked asterisk": "asterisk.n.01",
    "eight-pointed star": None,
    "cross mark": None,                      # cross.n.01 is a wooden structure
    "cross mark button": None,
    "red question mark": "question_mark.n.01",
    "red exclamation mark": "exclamation_mark.n.01",
    "red heart": "heart.n.07",               # the heart shape; heart.n.01 is "locus of feelings"
    "plus": "plus_sign.n.01",
    "minus": "minus_sign.n.01",
    "curly loop": None,                      # cringle.n.01 is a rope fastener
    "double curly loop": None,
    "star": "star.n.05",                     # the five-pointed figure, not the celestial body
    "hollow red circle": "circle.n.01",
    "black circle": "disk.n.01",             # filled round shape; "white circle" dropped
    "mahjong red dragon": "tile.n.03",       # a mahjong tile; dragon.n.01 is the creature
    "joker": "joker.n.04",                   # the playing card, not a person
    "b button (blood type)": None,           # bacillus.n.01
    "o button (blood type)": None,           # oxygen
    "p button": None,                        # phosphorus
    "cl button": None,                       # chlorine
    # --- nature, weather, sky (U+1F300 ..) ---
    "closed umbrella": None,
    "night with stars": None,
    "sunrise over mountains": None,
    "sunrise": "sunrise.n.02",               # the phenomenon, not dawn (a time)
    "sunset": "sunset.n.02",
    "bridge at night": "bridge.n.01",
    "water wave": "wave.n.01",
    "volcano": "volcano.n.02",               # vent.n.03 is the fissure only
    "globe showing asia-australia": None,
    "globe showing americas": None,
    "globe with meridians": "globe.n.03",    # the map sphere
    "waxing crescent moon": None,
    "first quarter moon": None,
    "waxing gibbous moon": None,
    "full moon": "moon.n.01",                # full_moon.n.01 is a time
    "waning gibbous moon": None,
    "last quarter moon": None,
    "waning crescent moon": None,
    "crescent moon": "crescent.n.01",
    "first quarter moon face": None,
    "last quarter moon face": None,
    "sun with face": None,
    "glowing star": None,
    "sun behind small cloud": None,
    "sun behind large cloud": None,
    "sun behind rain cloud": None,
    "leaf fluttering in wind": None,
    # --- food and plants ---
    "hot dog": "hotdog.n.02",                # hotdog.n.01 is a show-off
    "taco": "taco.n.02",                     # first sense is an ethnic slur
    "chestnut": "chestnut.n.03",             # the nut, not the wood
    "evergreen tree": "conifer.n.01",
    "hot pepper": "hot_pepper.n.02",         # the fruit
    "cherry blossom": "flowering_cherry.n.01",
    "ear of corn": "corn.n.03",              # ears of corn as food; corn.n.01 is the grass
    "sheaf of rice": "rice.n.02",            # the plant; cooked rice keeps rice.n.01
    "fallen leaf": None,                     # leaf.n.01 kept for maple leaf
    "watermelon": "watermelon.n.02",
    "tangerine": "tangerine.n.02",
    "banana": "banana.n.02",
    "pineapple": "pineapple.n.02",
    "green apple": "granny_smith.n.01",      # apple.n.01 kept for red apple
    "peach": "peach.n.03",
    "cherries": "cherry.n.03",
    "meat on bone": "meat.n.01",             # bone.n.01 is the tissue
    "poultry leg": "drumstick.n.01",
    "rice ball": None,                       # ball.n.01 is a games ball
    "curry rice": "curry.n.01",
    "steaming bowl": "noodle.n.01",          # a bowl of ramen noodles
    "roasted sweet potato": "sweet_potato.n.02",  # the edible root
    "fried shrimp": "prawn.n.01",            # edible decapod (food); first sense runt.n.01
    "fish cake with swirl": "fish_cake.n.01",
    "soft ice cream": "ice-cream_cone.n.01",
    "shaved ice": "water_ice.n.02",
    "doughnut": "doughnut.n.02",             # ring.n.02 is a toroidal shape
    "lollipop": "lollipop.n.02",             # ice_lolly.n.01 is ice cream on a stick
    "honey pot": "honey.n.01",
    "pot of food": "stew.n.02",
    "bento box": None,
    "performing arts": "mask.n.01",          # the theatre masks; performing_arts.n.01 is abstract
    "balloon": "balloon.n.02",               # the toy; balloon.n.01 is the aircraft
    "cooking": "frying_pan.n.01",            # pan with a fried egg
    "fork and knife": "cutlery.n.02",
    "fork and knife with plate": "plate.n.04",
    "teacup without handle": "tea.n.01",
    "sake": "sake.n.02",                     # sake.n.01 is "a reason for wanting something"
    "wine glass": "wineglass.n.01",          # glass.n.01 is the material
    "cocktail glass": "cocktail.n.01",
    "clinking beer mugs": "beer.n.01",
    "baby bottle": "bottle.n.03",
    "bottle with popping cork": "champagne.n.01",
    "popcorn": "popcorn.n.02",               # popcorn.n.01 is the plant
    # --- celebration, entertainment, sport ---
    "ribbon": "bow.n.08",                    # decorative bow; ribbon.n.01 is "any long object"
    "wrapped gift": "gift.n.01",
    "jack-o-lantern": "jack-o'-lantern.n.02",  # first candidate is a poisonous fungus
    "christmas tree": "christmas_tree.n.05",   # first candidate is an Australian shrub
    "sparkler": "sparkler.n.02",             # ice.n.03 is slang for diamonds
    "confetti ball": "confetti.n.01",
    "tanabata tree": None,
    "pine decoration": None,
    "crossed flags": None,
    "carp streamer": None,                   # streamer.n.01 is light that streams
    "graduation cap": "mortarboard.n.02",
    "military medal": None,
    "reminder ribbon": None,                 # ribbon.n.01 "any long object resembling a thin line"
    "studio microphone": None,               # microphone.n.01 kept for "microphone"
    "control knobs": "knob.n.02",            # the round handle, not a protuberance
    "film frames": "film.n.03",              # frame.n.01 is a spectacle frame
    "admission tickets": None,
    "carousel horse": "carousel.n.02",
    "roller coaster": "roller_coaster.n.02",   # roller_coaster.n.01 is a figurative state
    "artist palette": "palette.n.02",          # palette.n.01 is a colour range
    "ticket": "ticket.n.01",
    "clapper board": "clapperboard.n.01",
    "video game": "computer_game.n.01",
    "bullseye": "dartboard.n.01",
    "pool 8 ball": "billiard_ball.n.01",
    "bowling": "bowling_ball.n.01",
    "musical note": "note.n.03",
    "musical notes": None,
    "musical keyboard": "keyboard_instrument.n.01",  # keyboard.n.01 kept for the computer keyboard
    "musical score": "score.n.02",
    "running shirt": "tank_top.n.01",
    "tennis": "tennis_ball.n.01",
    "basketball": "basketball.n.02",
    "american football": "football.n.02",
    "rugby football": "rugby_ball.n.01",
    "volleyball": "volleyball.n.02",
    "field hockey": None,
    "ice hockey": "hockey_stick.n.01",
    "ping pong": "table-tennis_racquet.n.01",
    "badminton": "shuttlecock.n.01",
    "cricket game": "cricket_bat.n.01",        # the game's bat, not the insect or the game
    "black flag": None,                      # black_flag.n.01 is the pirate flag
    "snowboarder": "snowboard.n.01",
    "sports medal": "decoration.n.02",       # medal
    "trophy": "cup.n.08",                    # trophy.n.01 is a war/hunting trophy
    "person lifting weights": None,
    # --- buildings and places ---
    "snow-capped mountain": None,
    "camping": "campsite.n.01",
    "beach with umbrella": "beach.n.01",
    "building construction": "crane.n.04",   # construction crane; crane.n.05 is the bird
    "houses": "housing.n.01",
    "derelict house": "ruin.n.02",
    "cityscape": "city.n.01",
    "desert": "desert.n.01",
    "national park": "national_park.n.01",
    "japanese post office": None,
    "post office": "post_office.n.01",
    "bank": "bank.n.09",                     # the building; bank.n.01 is a river bank
    "atm sign": "cash_machine.n.01",
    "love hotel": None,
    "school": "school.n.02",                 # the building
    "japanese castle": None,
    "castle": "castle.n.02",                 # palace.n.01 is a stately mansion
    "label": "label.n.04",                   # the attached marker, not a description
    # --- animals ---
    "tiger": "tiger.n.02",                   # tiger.n.01 is a fierce person
    "leopard": "leopard.n.02",               # leopard.n.01 is the pelt
    "dragon": "dragon.n.01",
    "whale": "whale.n.02",                   # first sense giant.n.04 is a big person
    "ram": "ram.n.05",                       # first sense is random-access memory
    "ewe": "ewe.n.03",                       # ewe.n.01 is a West African people
    "chicken": "chicken.n.02",               # chicken.n.01 is the meat
    "octopus": "octopus.n.02",               # octopus.n.01 is the food
    "spiral shell": "seashell.n.01",         # shell.n.01 is ammunition
    "bug": "caterpillar.n.01",               # drawn as a caterpillar in every style
    "tropical fish": None,
    "blowfish": "puffer.n.02",               # blowfish.n.01 is the food
    "turtle": "turtle.n.02",                 # first sense is turtleneck
    "baby chick": None,
    "front-facing baby chick": None,
    "camel": "arabian_camel.n.01",
    "two-hump camel": "bactrian_camel.n.01",
    "dolphin": "dolphin.n.02",               # dolphinfish.n.02 is a fish
    "mouse face": None,
    "cow face": None,
    "tiger face": None,
    "rabbit face": None,
    "cat face": None,
    "dragon face": None,
    "spouting whale": None,
    "horse face": None,
    "monkey face": None,
    "dog face": None,
    "pig face": None,
    "pig nose": "snout.n.01",
    # --- body, clothing, accessories ---
    "backhand index pointing down": None,    # down.n.01 (feathers)
    "oncoming fist": None,                   # fist.n.01 kept for "raised fist"
    "waving hand": None,
    "ok hand": None,
    "thumbs up": None,
    "thumbs down": None,                     # down.n.01 (feathers)
    "crown": "crown.n.04",                   # the jewelled headdress, not the monarchy
    "woman’s hat": "hat.n.01",
    "woman’s clothes": "blouse.n.01",
    "bikini": "bikini.n.02",                 # bikini.n.01 is the atoll
    "purse": "purse.n.03",                   # bag.n.04 kept for "handbag"
    "high-heeled shoe": None,                # shoe.n.01 kept for "man’s shoe"
    "footprints": "footprint.n.01",
    "people with bunny ears": None,
    "person with veil": None,
    "person blond hair": None,
    "person with skullcap": None,
    "person wearing turban": None,
    "ghost": "ghost.n.03",                   # ghost.n.01 is a mental representation
    "angry face with horns": None,           # horn.n.01 is a noisemaker
    "smiling face with horns": None,
    "person tipping hand": None,
    "person getting haircut": None,
    "barber pole": "barber's_pole.n.01",
    "pill": "pill.n.02",                     # pill.n.01 is anything pill-shaped
    "ring": "ring.n.08",                     # the jewellery; ring.n.01 is a sound
    "gem stone": "gem.n.02",                 # rock.n.01 is a lump of rock
    "heart with ribbon": None,
    "heart decoration": None,
    "droplet": "drop.n.01",                  # droplet.n.01 is a quantity
    "speech balloon": None,                  # balloon.n.01 is the toy
    "thought balloon": None,
    "white flower": None,                    # a "well done" stamp; flower.n.01 kept for "wilted flower"
    "money bag": "moneybag.n.01",
    "currency exchange": None,               # exchange.n.01 is a chemical process
    "heavy dollar sign": "dollar_mark.n.02",
    "credit card": "credit_card.n.01",
    "dollar banknote": "bill.n.03",
    "yen banknote": None,
    "euro banknote": None,
    "pound banknote": None,
    "seat": "seat.n.03",                     # the furniture, not a reserved space
    # --- office, media, tools ---
    "computer disk": "magnetic_disk.n.01",   # disk.n.01 (round shape) kept for "black circle"
    "open file folder": None,
    "page facing up": "document.n.02",
    "calendar": "calendar.n.03",             # the printed day table; calendar.n.01 is a system
    "tear-off calendar": None,
    "spiral calendar": None,
    "chart increasing": "graph.n.01",
    "bar chart": "bar_chart.n.01",
    "round pushpin": None,
    "straight ruler": "rule.n.12",           # ruler.n.01 is a sovereign
    "triangular ruler": "triangle.n.04",     # the drafting triangle
    "notebook": "notebook.n.01",
    "notebook with decorative cover": None,
    "closed book": "book.n.02",              # the physical book; book.n.01 is the written work
    "scroll": "scroll.n.02",                 # coil.n.02 is a shape
    "fax machine": "facsimile.n.02",
    "satellite antenna": "dish.n.05",        # parabolic antenna
    "inbox tray": None,
    "package": "package.n.02",               # package.n.01 is a collection (group)
    "incoming envelope": None,
    "closed mailbox with lowered flag": None,  # flag.n.01 kept for the chequered flag
    "closed mailbox with raised flag": "mailbox.n.01",
    "open mailbox with raised flag": None,
    "open mailbox with lowered flag": None,
    "postal horn": "post_horn.n.01",         # horn.n.01 is a noisemaker
    "newspaper": "newspaper.n.03",           # the physical paper
    "rolled-up newspaper": None,
    "mobile phone off": None,
    "no mobile phones": None,
    "antenna bars": None,                    # parallel_bars.n.01 is gymnastics apparatus
    "video camera": "camcorder.n.01",
    "television": "television_receiver.n.01",  # television.n.01 is broadcasting
    "radio": "radio_receiver.n.01",          # radio.n.01 is the medium
    "shuffle tracks button": None,
    "battery": "battery.n.02",               # battery.n.01 is a group of guns
    "electric plug": "plug.n.05",            # plug.n.01 is a stopper
    "magnifying glass tilted left": "hand_glass.n.02",
    "locked with pen": None,                 # pen.n.01 kept for "pen"
    "locked with key": None,                 # key.n.01 kept for "key"
    "locked": "padlock.n.01",
    "link": "link.n.02",                     # chain link fastener; link.n.01 is a relation
    "fire": "fire.n.03",                     # flames; fire.n.01 is a burning event
    "wrench": "wrench.n.03",                 # wrench.n.01 is a sprain
    "hammer": "hammer.n.02",                 # hammer.n.01 is part of a gunlock
    "dotted six-pointed star": "hexagram.n.01",
    "trident emblem": "trident.n.01",
    "large orange diamond": "rhombus.n.01",  # diamond.n.01 is the gem
    "red triangle pointed up": "triangle.n.01",
    "red triangle pointed down": None,       # down.n.01 (feathers)
    "four o’clock": None,                    # four_o'clock.n.01 is a plant
    "spider web": "spider_web.n.02",         # the spun web, not a web resembling one
    "joystick": "joystick.n.02",             # stick.n.03 is an aircraft control stick
    "linked paperclips": None,
    "hand with fingers splayed": None,
    "middle finger": None,
    "printer": "printer.n.03",               # printer.n.01 is a person
    "old key": None,
    "speaking head": None,
    "left speech bubble": None,
    "right anger bubble": None,
    "ballot box with ballot": "ballot_box.n.01",
    # --- places and landmarks ---
    "mount fuji": "fuji.n.02",               # the mountain, not fuji.n.01 (a cherry tree)
    "map of japan": None,
    "moai": "statue.n.01",
    # --- smileys, people and gestures whose trimmed name hits a concrete noun ---
    "grinning face with sweat": None,
    "downcast face with sweat": None,
    "anxious face with sweat": None,
    "smiling face with sunglasses": None,
    "face with tongue": None,
    "winking face with tongue": None,
    "squinting face with tongue": None,
    "face with steam from nose": None,
    "frowning face with open mouth": None,
    "face with open mouth": None,
    "face without mouth": None,
    "face with medical mask": None,
    "grinning cat": None,
    "kissing cat": None,
    "pouting cat": None,
    "crying cat": None,
    "weary cat": None,
    "see-no-evil monkey": None,
    "hear-no-evil monkey": None,
    "speak-no-evil monkey": None,
    "person raising hand": None,
    "face with thermometer": None,
    "sign of the horns": None,
    "call me hand": None,
    "raised back of hand": None,
    "left-facing fist": None,
    "right-facing fist": None,
    "crossed fingers": None,
    "cowboy hat face": None,
    "person in tuxedo": None,
    "person fencing": None,                  # fence.n.01 is a barrier
    "person playing handball": None,
    # --- tableware, sport ---
    "clinking glasses": "flute.n.02",        # champagne flutes; spectacles.n.01 is eyewear
    "tumbler glass": "tumbler.n.02",         # glass.n.01 is the material
    "goal net": "goal.n.03",                 # first candidate is the Internet
    "1st place medal": "gold_medal.n.01",
    "2nd place medal": "silver_medal.n.01",
    "3rd place medal": "bronze_medal.n.01",
    # --- food ---
    "cucumber": "cucumber.n.02",             # the vegetable, not the vine
    "carrot": "carrot.n.03",                 # carrot.n.01/.02 are plant senses
    "baguette bread": "baguet.n.01",         # bread.n.01 kept for "bread"
    "shallow pan of food": "paella.n.01",
    "stuffed flatbread": "pita.n.01",
    "egg": "egg.n.02",                       # egg.n.01 is the reproductive body
    "peanuts": "peanut.n.04",                # peanuts.n.01 is "a trifling amount"
    "cheese wedge": "cheese.n.01",           # wedge.n.01 is a shape
    # --- animals ---
    "scorpion": "scorpion.n.03",             # scorpio.n.01 is a person born under Scorpio
    "unicorn": "unicorn.n.01",
    "shrimp": "shrimp.n.03",                 # runt.n.01 is a small person
    "squid": "squid.n.02",                   # squid.n.01 is the food
    # --- transport ---
    "high-speed train": None,                # train.n.01 kept for "train"
    "light rail": None,                      # railing.n.01 is a barrier
    "station": "railway_station.n.01",       # station.n.01 is any facility
    "tram": "streetcar.n.01",                # tramway.n.01 is the aerial cableway
    "tram car": None,                        # car.n.01 kept for "automobile"
    "oncoming bus": None,
    "bus stop": "bus_stop.n.01",
    "oncoming police car": None,
    "oncoming taxi": None,
    "oncoming automobile": None,
    "mountain railway": "cog_railway.n.01",  # railway.n.01 is the operating company
    "suspension railway": None,
    "mountain cableway": "cable_car.n.01",   # first candidate mountain.n.01
    "vertical traffic light": "traffic_light.n.01",
    "construction": "barricade.n.02",        # the road barrier pictured, not the act
    "police car light": None,                # light.n.01 is radiation
    "triangular flag": "pennant.n.03",
    "litter in bin sign": None,
    "potable water": "drinking_water.n.01",
    "non-potable water": None,
    "no bicycles": None,
    "men’s room": None,
    "women’s room": None,
    "toilet": "toilet.n.02",                 # the fixture; toilet.n.01 is the room
    "water closet": None,
    "person taking bath": None,              # bath.n.01 kept off; bathtub is its own emoji
    "baggage claim": None,
    "couch and lamp": "sofa.n.01",
    "person in bed": None,
    "bellhop bell": None,
    "place of worship": None,                # the emoji shows a person praying
    "stop sign": "street_sign.n.01",         # stop.n.01 is the event of ending
    "shield": "shield.n.02",                 # armour carried on the arm
    "oil drum": "drum.n.04",                 # drum.n.01 is the instrument
    "railway track": "railroad_track.n.01",  # path.n.04 is a route
    "motor boat": "motorboat.n.01",
    "small airplane": "propeller_plane.n.01",
    "kick scooter": "scooter.n.02",          # water_scooter.n.01 is a boat
}

# Synset id -> group, where the hypernym/lexname rules give the wrong family.
GROUP_OVERRIDES: dict[str, str] = {
    # mythical creatures are noun.person in WordNet
    "dragon.n.01": "animal", "unicorn.n.01": "animal", "ghost.n.03": "symbol",
    # sky, water and fire drawn as nature
    "crescent.n.01": "nature", "wave.n.01": "nature", "fire.n.03": "nature", "drop.n.01": "nature",
    # eyewear and small bags are worn
    "spectacles.n.01": "clothing", "sunglasses.n.01": "clothing", "purse.n.03": "clothing",
    # sports and games equipment not under sports_equipment/game_equipment
    "ski.n.01": "sport", "fishing_rod.n.01": "sport", "bow_and_arrow.n.01": "sport",
    "dartboard.n.01": "sport", "snowboard.n.01": "sport", "table-tennis_racquet.n.01": "sport",
    "cup.n.07": "sport", "die.n.01": "sport", "playing_card.n.01": "sport", "joker.n.04": "sport",
    "decoration.n.02": "sport", "cup.n.08": "sport", "gold_medal.n.01": "sport",
    "silver_medal.n.01": "sport", "bronze_medal.n.01": "sport",
    # music notation
    "score.n.02": "music",
    # plants
    "bouquet.n.01": "plant",
    # things, not symbols / places / vehicles
    "ticket.n.01": "object", "label.n.04": "object", "notebook.n.01": "object",
    "scroll.n.02": "object", "barber's_pole.n.01": "object", "traffic_light.n.01": "object",
    "shopping_cart.n.01": "object", "door.n.01": "object", "barricade.n.02": "object",
    "public_toilet.n.01": "symbol", "cable_car.n.01": "vehicle",
    # buildings WordNet files under facility/depository/group rather than building
    "bank.n.09": "place", "post_office.n.01": "place", "railway_station.n.01": "place",
}


def cldr_name(ch: str) -> str:
    return emoji.EMOJI_DATA[ch]["en"].strip(":").replace("_", " ").lower()


def single_codepoint_emoji() -> list[tuple[int, str, str]]:
    """(codepoint, char, name) of every single-code-point emoji renderable in all styles."""
    found: dict[int, tuple[int, str, str]] = {}
    for ch in emoji.EMOJI_DATA:
        base = ch.replace("\ufe0f", "")
        if len(base) != 1:
            continue
        cp = ord(base)
        if 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF:  # regional indicators, skin tones
            continue
        if cp < 0x80:  # keycap bases (#, *, 0-9)
            continue
        if cp in found:
            continue
        if not all(available(cp, style) for style in STYLES):
            continue
        found[cp] = (cp, base, cldr_name(ch))
    return [found[cp] for cp in sorted(found)]


def variants(name: str) -> list[str]:
    """Candidate lemmas for a CLDR name, most specific first."""
    words = name.replace(":", "").replace(",", "").replace("’", "'").replace("“", "").replace(
        "”", "").split()
    out: list[str] = []

    def add(ws: list[str]) -> None:
        if ws:
            lemma = "_".join(ws)
            if lemma not in out:
                out.append(lemma)

    add(words)
    core = [w for w in words if w not in GENERIC]
    add(core)
    trimmed = list(core)
    while len(trimmed) > 1 and trimmed[0] in ADJECTIVES:
        trimmed = trimmed[1:]
        add(trimmed)
    for i in range(1, len(core)):
        add(core[i:])
    for i in range(len(core) - 1, 0, -1):
        add(core[:i])
    return out


def candidate(W, name: str) -> str | None:
    for lemma in variants(name):
        synsets = W.synsets(lemma, "n")
        if synsets:
            return synsets[0].name()
    return None


def ancestors(synset) -> set[str]:
    """Names of all (instance) hypernyms of ``synset``, over every path."""
    seen: set[str] = set()
    todo = [synset]
    while todo:
        s = todo.pop()
        for h in s.hypernyms() + s.instance_hypernyms():
            if h.name() not in seen:
                seen.add(h.name())
                todo.append(h)
    return seen


def group_of(W, synset_id: str) -> str:
    """Coarse family: curated override, else the first matching hypernym rule, else the lexname."""
    if synset_id in GROUP_OVERRIDES:
        return GROUP_OVERRIDES[synset_id]
    synset = W.synset(synset_id)
    up = ancestors(synset) | {synset_id}
    for group, roots in HYPERNYM_GROUPS:
        if up & roots:
            return group
    return LEXNAME_GROUP.get(synset.lexname(), "object")


def build(W) -> tuple[list[tuple[str, str, str, str, str]], list[str]]:
    """TSV rows sorted by codepoint, and curation problems (unknown names, reused synsets)."""
    rows: list[tuple[str, str, str, str, str]] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    emoji_list = single_codepoint_emoji()
    names = {name for _, _, name in emoji_list}
    problems += [f"override for unknown emoji name {n!r}" for n in sorted(set(OVERRIDES) - names)]
    for cp, ch, name in emoji_list:
        if name in OVERRIDES:
            synset_id = OVERRIDES[name]
            if synset_id is None:
                continue
        else:
            synset_id = candidate(W, name)
            if synset_id is None or W.synset(synset_id).lexname() not in CONCRETE_LEXNAMES:
                continue
        W.synset(synset_id)  # raises on a bad id
        if synset_id in seen:  # curate with OVERRIDES: drop one or give it a more specific synset
            problems.append(f"{synset_id} used by both {seen[synset_id]!r} and {name!r}")
            continue
        seen[synset_id] = name
        group = group_of(W, synset_id)
        assert group in GROUPS, (name, synset_id, group)
        rows.append((f"{cp:04X}", ch, name, synset_id, group))
    return rows, problems


def dump(W) -> None:
    """Print every emoji with its first-sense candidate and its override, for curation."""
    for cp, ch, name in single_codepoint_emoji():
        cand = candidate(W, name)
        ov = OVERRIDES.get(name, "-")
        if cand:
            s = W.synset(cand)
            print(f"{cp:04X}\t{ch}\t{name}\t{cand}\t{s.lexname()}\t{ov}\t{s.definition()[:70]}")
        else:
            print(f"{cp:04X}\t{ch}\t{name}\t-\t-\t{ov}\t-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", action="store_true", help="print candidates for review")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    W = wn()
    if args.dump:
        dump(W)
        return 0
    rows, problems = build(W)
    if problems:
        for p in problems:
            print("error:", p, file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(HEADER + "\n")
        for row in rows:
            f.write("\t".join(row) + "\n")
    counts = Counter(r[4] for r in rows)
    for g in GROUPS:
        print(f"{g:10s}{counts.get(g, 0):5d}")
    print(f"{'total':10s}{len(rows):5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
