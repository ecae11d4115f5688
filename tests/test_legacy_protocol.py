"""Legacy protocol profiles (mypt_chat, mypt_tool) against the ORIGINAL MyPT scripts.

GOLDEN below is what chberclaz/MyPT's scripts/sft/prepare_chat_sft.py and prepare_tool_sft.py
wrote for tests/golden/legacy_episodes.jsonl and legacy_tool_episodes.jsonl (run by
tests/golden/make_legacy_golden.py on a fetched copy; run name -> flags there). They are
literal data: this test does not need the original code.

Documented exceptions (docs/coming_from_mypt.md), asserted as such below:
* chat record 3 types "<myPT_eot>" in its content: the original makes it the control token
  (and trains on it inside the user message); we keep it plain text;
* chat record 4 is a replay record: the original chat script's unpacked path serializes it as
  an empty conversation; we follow its packed path (the text, every token trained).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError
from mypt_lightning.tokens.protocol_profiles import (
    LEGACY_AGENTIC_PROMPT, LEGACY_CONVERSATION_PROMPT, get_profile, legacy_toolresult_text, profile_from_metadata,
)
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, ASSISTANT_OPEN, ENDOFTEXT_ID, EOT, USER_CLOSE, USER_OPEN

HERE = Path(__file__).resolve().parent / "golden"
CHAT = [json.loads(line) for line in (HERE / "legacy_episodes.jsonl").read_text(encoding="utf-8").splitlines()]
TOOL = [json.loads(line) for line in (HERE / "legacy_tool_episodes.jsonl").read_text(encoding="utf-8").splitlines()]
TAG_IN_CONTENT, REPLAY = 3, 4

# run name -> (profile, records, options, weighted)
RUNS = {
    "chat_default": ("mypt_chat", CHAT, {}, False),
    "chat_system_prompt": ("mypt_chat", CHAT, {"system_prompt": "Be brief."}, False),
    "chat_no_system": ("mypt_chat", CHAT, {"no_system_prompt": True}, False),
    "chat_rag": ("mypt_chat", CHAT, {"rag_tags": True}, False),
    "chat_rag_weighted_packed": ("mypt_chat", CHAT, {"rag_tags": True}, True),
    "tool_default": ("mypt_tool", TOOL, {}, False),
    "tool_weighted": ("mypt_tool", TOOL, {}, True),
}

# Produced by tests/golden/make_legacy_golden.py from the original scripts (do not edit by hand).
GOLDEN = {
    'chat_default': [
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261, 40313, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 17250, 612, 50260, 50261, 15496, 0, 1374, 460, 314, 1037, 30, 50262, 50259, 25605, 5720, 25, 266, 494, 599, 11033, 83, 318, 83, 1658, 30, 198, 50260, 50261, 40, 354, 387, 1350, 885, 500, 471, 11840, 13, 220, 220, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 8241, 2630, 340, 30, 50260, 50261, 2782, 64, 2630, 340, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 6030, 220, 50275, 3387, 50260, 50261, 45677, 25, 220, 50275, 318, 257, 7621, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ],
    'chat_system_prompt': [
        ([50257, 3856, 4506, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261, 40313, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 3856, 4506, 13, 50258, 50259, 17250, 612, 50260, 50261, 15496, 0, 1374, 460, 314, 1037, 30, 50262, 50259, 25605, 5720, 25, 266, 494, 599, 11033, 83, 318, 83, 1658, 30, 198, 50260, 50261, 40, 354, 387, 1350, 885, 500, 471, 11840, 13, 220, 220, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 3856, 4506, 13, 50258, 50259, 8241, 2630, 340, 30, 50260, 50261, 2782, 64, 2630, 340, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 3856, 4506, 13, 50258, 50259, 6030, 220, 50275, 3387, 50260, 50261, 45677, 25, 220, 50275, 318, 257, 7621, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 3856, 4506, 13, 50258, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ],
    'chat_no_system': [
        ([50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261, 40313, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
        ([50259, 17250, 612, 50260, 50261, 15496, 0, 1374, 460, 314, 1037, 30, 50262, 50259, 25605, 5720, 25, 266, 494, 599, 11033, 83, 318, 83, 1658, 30, 198, 50260, 50261, 40, 354, 387, 1350, 885, 500, 471, 11840, 13, 220, 220, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50259, 8241, 2630, 340, 30, 50260, 50261, 2782, 64, 2630, 340, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50259, 6030, 220, 50275, 3387, 50260, 50261, 45677, 25, 220, 50275, 318, 257, 7621, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50275],
         [1.0]),
    ],
    'chat_rag': [
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261, 40313, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 17250, 612, 50260, 50261, 15496, 0, 1374, 460, 314, 1037, 30, 50262, 50259, 25605, 5720, 25, 266, 494, 599, 11033, 83, 318, 83, 1658, 30, 198, 50260, 50261, 40, 354, 387, 1350, 885, 500, 471, 11840, 13, 220, 220, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 50263, 58, 15390, 16, 60, 383, 989, 373, 3194, 416, 47395, 13, 50264, 8241, 2630, 340, 30, 50260, 50265, 9781, 28130, 352, 3188, 13, 50266, 50261, 50271, 464, 4732, 3891, 47395, 13, 50272, 2782, 64, 2630, 340, 13, 50273, 15390, 16, 50274, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 6030, 220, 50275, 3387, 50260, 50261, 45677, 25, 220, 50275, 318, 257, 7621, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ],
    'chat_rag_weighted_packed': [
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261, 40313, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 17250, 612, 50260, 50261, 15496, 0, 1374, 460, 314, 1037, 30, 50262, 50259, 25605, 5720, 25, 266, 494, 599, 11033, 83, 318, 83, 1658, 30, 198, 50260, 50261, 40, 354, 387, 1350, 885, 500, 471, 11840, 13, 220, 220, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 50263, 58, 15390, 16, 60, 383, 989, 373, 3194, 416, 47395, 13, 50264, 8241, 2630, 340, 30, 50260, 50265, 9781, 28130, 352, 3188, 13, 50266, 50261, 50271, 464, 4732, 3891, 47395, 13, 50272, 2782, 64, 2630, 340, 13, 50273, 15390, 16, 50274, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0, 1.5, 2.0, 2.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 6030, 220, 50275, 3387, 50260, 50261, 45677, 25, 220, 50275, 318, 257, 7621, 13, 50262, 50275],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]),
        ([3646, 391, 2181, 24674, 2420, 11, 8776, 319, 790, 11241, 13],
         [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
    'tool_default': [
        ([50257, 1639, 389, 2011, 11571, 44573, 8796, 13, 50258, 198, 50259, 16742, 34165, 546, 10373, 50260, 198, 50261, 50271, 40, 815, 2989, 13, 50272, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 5805, 1600, 366, 4852, 62, 74, 1298, 362, 92, 50268, 50262, 198, 50269, 4895, 15390, 2886, 1298, 685, 4895, 15390, 62, 312, 1298, 366, 67, 16, 1600, 366, 7839, 1298, 366, 5317, 305, 284, 10373, 20662, 48999, 50270, 198, 50261, 21077, 37219, 284, 10373, 13, 50273, 67, 16, 50274, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
        ([50259, 8053, 4963, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 4868, 62, 31628, 20662, 50268, 50262, 198, 50269, 1, 3919, 4963, 1043, 1, 50270, 198, 50261, 1858, 389, 645, 4963, 13, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
        ([50257, 50, 50258, 198, 50259, 50263, 5225, 10223, 25, 4277, 50264, 3855, 2205, 288, 17, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 1136, 62, 15390, 1600, 366, 15390, 62, 312, 1298, 366, 67, 17, 20662, 50268, 50262, 198, 50269, 4895, 5239, 1298, 366, 34194, 78, 370, 2120, 20662, 50270, 198, 50261, 1026, 1139, 4789, 78, 370, 2120, 13, 50262, 198, 50259, 9690, 50260, 198, 50265, 11295, 50266, 198, 50261, 1639, 821, 7062, 0, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
        ([3041, 1759, 2420, 287, 257, 2891, 27039, 13],
         [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 23998, 2683, 1262, 44573, 4899, 618, 2622, 13, 198, 198, 33637, 25, 198, 12, 44573, 13, 12947, 7, 22766, 11, 1353, 62, 74, 28, 20, 8, 532, 1064, 5981, 4963, 198, 12, 44573, 13, 4868, 62, 31628, 3419, 532, 1351, 477, 4963, 220, 220, 198, 12, 44573, 13, 1136, 62, 15390, 7, 15390, 62, 312, 393, 3670, 8, 532, 651, 3188, 2420, 198, 12, 44573, 13, 16345, 3876, 1096, 7, 15390, 62, 312, 393, 2420, 8, 532, 35743, 2695, 198, 198, 26227, 25, 220, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 9313, 92, 50268, 50258, 198, 50259, 2061, 857, 262, 18951, 910, 30, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 600, 305, 20662, 50268, 50262, 198, 50269, 4895, 15390, 2886, 1298, 685, 4895, 7839, 1298, 366, 5317, 305, 1600, 366, 5239, 1298, 366, 15496, 526, 92, 48999, 50270, 198, 50261, 1026, 1139, 18435, 13, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
    ],
    'tool_weighted': [
        ([50257, 1639, 389, 2011, 11571, 44573, 8796, 13, 50258, 198, 50259, 16742, 34165, 546, 10373, 50260, 198, 50261, 50271, 40, 815, 2989, 13, 50272, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 5805, 1600, 366, 4852, 62, 74, 1298, 362, 92, 50268, 50262, 198, 50269, 4895, 15390, 2886, 1298, 685, 4895, 15390, 62, 312, 1298, 366, 67, 16, 1600, 366, 7839, 1298, 366, 5317, 305, 284, 10373, 20662, 48999, 50270, 198, 50261, 21077, 37219, 284, 10373, 13, 50273, 67, 16, 50274, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0, 1.5, 2.0, 0.0, 2.0, 0.0]),
        ([50259, 8053, 4963, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 4868, 62, 31628, 20662, 50268, 50262, 198, 50269, 1, 3919, 4963, 1043, 1, 50270, 198, 50261, 1858, 389, 645, 4963, 13, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 2.0, 0.0]),
        ([50257, 50, 50258, 198, 50259, 50263, 5225, 10223, 25, 4277, 50264, 3855, 2205, 288, 17, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 1136, 62, 15390, 1600, 366, 15390, 62, 312, 1298, 366, 67, 17, 20662, 50268, 50262, 198, 50269, 4895, 5239, 1298, 366, 34194, 78, 370, 2120, 20662, 50270, 198, 50261, 1026, 1139, 4789, 78, 370, 2120, 13, 50262, 198, 50259, 9690, 50260, 198, 50265, 11295, 50266, 198, 50261, 1639, 821, 7062, 0, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 2.0, 0.0]),
        ([3041, 1759, 2420, 287, 257, 2891, 27039, 13],
         [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([50257, 1639, 389, 2011, 11571, 13, 23998, 2683, 1262, 44573, 4899, 618, 2622, 13, 198, 198, 33637, 25, 198, 12, 44573, 13, 12947, 7, 22766, 11, 1353, 62, 74, 28, 20, 8, 532, 1064, 5981, 4963, 198, 12, 44573, 13, 4868, 62, 31628, 3419, 532, 1351, 477, 4963, 220, 220, 198, 12, 44573, 13, 1136, 62, 15390, 7, 15390, 62, 312, 393, 3670, 8, 532, 651, 3188, 2420, 198, 12, 44573, 13, 16345, 3876, 1096, 7, 15390, 62, 312, 393, 2420, 8, 532, 35743, 2695, 198, 198, 26227, 25, 220, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 9313, 92, 50268, 50258, 198, 50259, 2061, 857, 262, 18951, 910, 30, 50260, 198, 50261, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 600, 305, 20662, 50268, 50262, 198, 50269, 4895, 15390, 2886, 1298, 685, 4895, 7839, 1298, 366, 5317, 305, 1600, 366, 5239, 1298, 366, 15496, 526, 92, 48999, 50270, 198, 50261, 1026, 1139, 18435, 13, 50262, 198, 50275, 198],
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 2.0, 0.0]),
    ],
}


CASES = [(run, i) for run, (_, records, _, _) in RUNS.items() for i in range(len(records))]


def _ours(run: str, i: int):
    profile, records, options, weighted = RUNS[run]
    return get_profile(profile, **options).serialize(records[i], weighted)


@pytest.mark.parametrize("run,i", CASES, ids=[f"{r}-{i}" for r, i in CASES])
def test_token_identical_to_the_original_scripts(run, i):
    if run.startswith("chat") and i == TAG_IN_CONTENT:
        pytest.skip("deliberate difference, see test_typed_tag_strings_stay_text")
    if run.startswith("chat") and i == REPLAY and run != "chat_rag_weighted_packed":
        # the original's unpacked path drops replay text; its packed path is the reference
        assert GOLDEN[run][i][0][-1] == EOT and len(GOLDEN[run][i][0]) <= 8
        assert _ours(run, i) == GOLDEN["chat_rag_weighted_packed"][REPLAY]
        return
    ids, weights = _ours(run, i)
    want_ids, want_weights = GOLDEN[run][i]
    assert ids == want_ids
    assert weights == want_weights


def test_typed_tag_strings_stay_text():
    for run in ("chat_default", "chat_rag_weighted_packed"):
        original_ids, original_w = GOLDEN[run][TAG_IN_CONTENT]
        user = slice(original_ids.index(USER_OPEN), original_ids.index(USER_CLOSE))
        assert EOT in original_ids[user]  # the original's control token inside the user message ...
        assert original_w[original_ids.index(EOT)] > 0  # ... and trained on
        ids, weights = _ours(run, TAG_IN_CONTENT)
        assert ids.count(EOT) == 1 and ids[-1] == EOT  # ours: only the real end of the conversation
        assert weights[-1] == original_w[-1]


def test_prompt_is_the_training_prefix():
    chat = get_profile("mypt_chat")
    for i in (0, 1):
        ids, _ = GOLDEN["chat_default"][i]
        messages = CHAT[i]["messages"]
        last_assistant = len(ids) - 1 - ids[::-1].index(ASSISTANT_OPEN)
        prompt = chat.build_prompt(messages[:-1], system=chat.default_system())
        assert prompt == ids[:last_assistant + 1]
    tool = get_profile("mypt_tool")
    ids, _ = GOLDEN["tool_default"][0]
    record = {"system": TOOL[0]["system"], "messages": TOOL[0]["messages"][:3]}
    prompt = tool.build_prompt(record)
    last_assistant = len(ids) - 1 - ids[::-1].index(ASSISTANT_OPEN)
    assert prompt == ids[:last_assistant + 1]


def test_tool_prompt_is_what_the_agent_controller_sends():
    # core/agent/controller.py build_prompt: blocks joined with "\n", then the opener; the whole
    # string is encoded with tags as tokens, the tag strings inside its default agentic prompt too
    from mypt_lightning.inference.generation import encode_with_tags

    call = '{"name": "workspace.search", "query": "ML"}'
    text = "\n".join([f"<myPT_system>{LEGACY_AGENTIC_PROMPT}</myPT_system>", "<myPT_user>Find ML docs</myPT_user>",
                      f"<myPT_assistant><myPT_toolcall>{call}</myPT_toolcall></myPT_assistant>",
                      '<myPT_toolresult>{"documents": []}</myPT_toolresult>', "<myPT_assistant>"])
    tool = get_profile("mypt_tool")
    messages = [{"role": "user", "content": "Find ML docs"},
                {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "ML"}},
                {"role": "toolresult", "name": "workspace.search", "content": {"documents": []}}]
    assert tool.build_prompt(messages, system=tool.default_system()) == encode_with_tags(text)


# What the ORIGINAL AgentController(model, tools=None).build_prompt([{"role": "user", "content":
# "Find the intro doc"}]) encodes to with the original tokenizer (run on a checkpoint the original
# core/model.py saved; tests/golden/make_legacy_cli_golden.py): its default agentic prompt's
# "<myPT_toolcall>" ... "</myPT_toolcall>" are the control tokens 50267/50268.
CONTROLLER_PROMPT = [50257, 1639, 389, 2011, 11571, 13, 23998, 2683, 1262, 44573, 4899, 618, 2622, 13, 198, 198, 33637, 25, 198, 12, 44573, 13, 12947, 7, 22766, 11, 1353, 62, 74, 28, 20, 8, 532, 1064, 5981, 4963, 198, 12, 44573, 13, 4868, 62, 31628, 3419, 532, 1351, 477, 4963, 220, 220, 198, 12, 44573, 13, 1136, 62, 15390, 7, 15390, 62, 312, 393, 3670, 8, 532, 651, 3188, 2420, 198, 12, 44573, 13, 16345, 3876, 1096, 7, 15390, 62, 312, 393, 2420, 8, 532, 35743, 2695, 198, 198, 26227, 25, 220, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 9313, 92, 50268, 50258, 198, 50259, 16742, 262, 18951, 2205, 50260, 198, 50261]
# ... and scripts/eval/sft_eval_suite.py make_prompt("What is the capital of France?")
EVAL_SUITE_PROMPT = [50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261]


def test_prompts_equal_the_original_controller_and_eval_suite():
    tool, chat = get_profile("mypt_tool"), get_profile("mypt_chat")
    assert tool.build_prompt([{"role": "user", "content": "Find the intro doc"}], tool.default_system()) == CONTROLLER_PROMPT
    assert chat.build_prompt([{"role": "user", "content": "What is the capital of France?"}],
                             chat.default_system()) == EVAL_SUITE_PROMPT
    # only the original's own prompt keeps its tags; the same strings typed as a system prompt are text
    typed = tool.build_prompt([{"role": "user", "content": "Hi"}], "Use <myPT_toolcall>x</myPT_toolcall>")
    assert 50267 not in typed and 50268 not in typed


def test_stop_ids_and_defaults():
    assert get_profile("mypt_chat").stop_ids() == {ASSISTANT_CLOSE, EOT, ENDOFTEXT_ID}
    assert get_profile("mypt_tool").stop_ids() == {ASSISTANT_CLOSE, EOT, ENDOFTEXT_ID}
    assert get_profile("ours").stop_ids() == {EOT, ENDOFTEXT_ID}
    assert get_profile("mypt_chat").default_system() == LEGACY_CONVERSATION_PROMPT == "You are MyPT."
    assert get_profile("mypt_chat", system_prompt="X").default_system() == "X"
    assert get_profile("mypt_chat", no_system_prompt=True).default_system() is None
    assert get_profile("mypt_tool").default_system().startswith("You are MyPT. Answer questions using workspace")
    assert get_profile("ours").default_system(3).startswith("You are MyPT, a helpful assistant")
    assert get_profile("ours").pad_id == ENDOFTEXT_ID and get_profile("mypt_chat").pad_id == EOT


def test_toolresult_strings():
    assert legacy_toolresult_text("no documents") == '"no documents"'
    assert legacy_toolresult_text('{"a": 1}') == '{"a": 1}'
    assert legacy_toolresult_text("42") == "42"
    assert legacy_toolresult_text({"ä": 1}) == '{"ä": 1}'


def test_options_and_errors():
    with pytest.raises(UserError, match="legacy"):
        get_profile("ours", system_prompt="x")
    with pytest.raises(UserError, match="exclude"):
        get_profile("mypt_chat", system_prompt="x", no_system_prompt=True)
    with pytest.raises(UserError, match="unknown protocol"):
        get_profile("mypt")
    with pytest.raises(EpisodeError, match="no tool roles"):
        get_profile("mypt_chat").serialize(TOOL[0])


def test_profile_from_metadata():
    assert profile_from_metadata({"dataset_type": "toolcall_sft"}).name == "mypt_tool"
    assert profile_from_metadata({"skip_system_prompt": False, "enable_rag_tags": False}).name == "mypt_chat"
    assert profile_from_metadata({"protocol": {"name": "mypt_chat"}}).name == "mypt_chat"
    assert profile_from_metadata({"created_by": "mypt_lightning.data_prep.prepare"}).name == "ours"
    assert profile_from_metadata({}) is None


def test_ours_is_protocol_unchanged():
    from mypt_lightning.tokens.protocol import build_prompt, serialize_episode

    record = TOOL[0]
    assert get_profile().serialize(record, True) == serialize_episode(record, True)
    assert get_profile().build_prompt(record["messages"][:1], "S") == build_prompt(record["messages"][:1], "S")


# ============================================================================ prepare_sft --protocol


def _prepare(tmp_path, source: Path, name: str, *flags: str) -> Path:
    from tools.prepare_sft import main

    out = tmp_path / name
    assert main(["--input", str(source), "--output_dir", str(out), "--val_split", "0", "--no_progress", *flags]) == 0
    return out


def _episodes(out: Path):
    from data_modules.episode_reader import EpisodeDataset
    from mypt_lightning.data_prep.validate import iter_episodes

    ds = EpisodeDataset(out, "train")
    return [(t.tolist(), w.tolist()) for _, _, t, w in iter_episodes(ds)], ds


def test_prepare_sft_mypt_tool_writes_the_original_episodes(tmp_path):
    out = _prepare(tmp_path, HERE / "legacy_tool_episodes.jsonl", "tool", "--protocol", "mypt_tool", "--weighted_mask")
    episodes, _ = _episodes(out)
    assert episodes == GOLDEN["tool_weighted"]
    meta = json.loads((out / "dataset_metadata.json").read_text())
    assert meta["protocol"]["name"] == "mypt_tool"


def test_prepare_sft_mypt_chat_packed_pads_with_eot(tmp_path, capsys):
    out = _prepare(tmp_path, HERE / "legacy_episodes.jsonl", "chat", "--protocol", "mypt_chat", "--enable_rag_tags",
                   "--weighted_mask", "--enable_packing", "--pack_block_size", "64")
    episodes, ds = _episodes(out)
    want = [e for i, e in enumerate(GOLDEN["chat_rag_weighted_packed"]) if i != TAG_IN_CONTENT]
    want.append(_ours("chat_rag_weighted_packed", TAG_IN_CONTENT))  # the deliberate difference
    assert sorted(episodes) == sorted(want)  # packing may arrange them differently
    for i in range(len(ds)):
        s = ds[i]
        pad = s["segment_ids"] == 0
        assert (s["tokens"][pad] == EOT).all() and (s["weights"][pad] == 0).all()
    assert "protocol mypt_chat" in capsys.readouterr().out


def test_truncate_tail_keeps_the_end_and_names_the_episodes(tmp_path, capsys):
    out = _prepare(tmp_path, HERE / "legacy_tool_episodes.jsonl", "cut", "--protocol", "mypt_tool",
                   "--enable_packing", "--pack_block_size", "40", "--truncate", "tail")
    text = capsys.readouterr().out
    assert "cut to the last 40 tokens: " in text and "legacy_tool_episodes.jsonl:1:" in text
    episodes, _ = _episodes(out)
    full = GOLDEN["tool_default"]
    for ids, weights in full:
        if len(ids) > 40:
            assert (ids[-40:], weights[-40:]) in episodes
    meta = json.loads((out / "dataset_metadata.json").read_text())
    assert meta["length_limit"]["policy"] == "truncate_tail" and meta["length_limit"]["truncated_examples"]


def test_prepare_rejects_legacy_options_under_ours(tmp_path, capsys):
    from tools.prepare_sft import main

    rc = main(["--input", str(HERE / "legacy_episodes.jsonl"), "--output_dir", str(tmp_path / "x"),
               "--no_system_prompt"])
    assert rc == 2 and "legacy profiles" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_reader_truncates_head_or_tail(tmp_path):
    from data_modules.episode_reader import EpisodeDataset

    out = _prepare(tmp_path, HERE / "legacy_tool_episodes.jsonl", "u", "--protocol", "mypt_tool")
    ids, _ = GOLDEN["tool_default"][0]
    head = EpisodeDataset(out, "train", max_length=10)[0]["tokens"].tolist()
    tail = EpisodeDataset(out, "train", max_length=10, truncate="tail")[0]["tokens"].tolist()
    assert head == ids[:10] and tail == ids[-10:]


# ============================================================================ validate / inspect of MyPT files


def _write_mypt_dataset(root: Path, episodes, *, packed_block: int | None, weighted: bool, metadata: dict) -> Path:
    """The file layout the original scripts write (EpisodeShardWriter, greedy_bin_pack with
    <myPT_eot> padding), filled with the original's literal episodes above."""
    import numpy as np

    from mypt_lightning.tokens.special_tokens import SPECIAL_TOKENS

    split = root / "train"
    split.mkdir(parents=True)
    tokens, weights, segments, index = [], [], [], []
    if packed_block is None:
        for ids, ws in episodes:
            index.append((len(tokens), len(ids)))
            tokens += ids
            weights += ws
    else:
        block, block_w, block_s = [], [], []

        def flush():
            pad = packed_block - len(block)
            index.append((len(tokens), packed_block))
            tokens.extend(block + [EOT] * pad)
            weights.extend(block_w + [0.0] * pad)
            segments.extend(block_s + [0] * pad)

        for ids, ws in episodes:
            ids, ws = ids[-packed_block:], ws[-packed_block:]  # the original keeps the end of a long one
            if len(block) + len(ids) > packed_block:
                flush()
                block, block_w, block_s = [], [], []
            seg = (block_s[-1] if block_s else 0) + 1
            block, block_w, block_s = block + ids, block_w + ws, block_s + [seg] * len(ids)
        flush()
        (split / "segment_ids.bin").write_bytes(np.array(segments, np.uint8).tobytes())
    (split / "tokens.bin").write_bytes(np.array(tokens, np.uint32).tobytes())
    (split / "mask.bin").write_bytes((np.array(weights) > 0).astype(np.uint8).tobytes())
    if weighted:
        (split / "mask_weighted.bin").write_bytes(np.array(weights, np.float32).tobytes())
    (split / "episodes.idx").write_bytes(np.array(index, np.uint64).tobytes())
    state = {"token_kind": "gpt2", "chars": None, "base_vocab_size": 50257, "model_vocab_size": 50304,
             "special_token_encoder": dict(SPECIAL_TOKENS), "special_token_version": 1}
    (root / "tokenizer_state.json").write_text(json.dumps(state))
    (root / "dataset_metadata.json").write_text(json.dumps({"schema": "episode_indexed_sft_v1", **metadata}))
    return root


TOOL_META = {"dataset_type": "toolcall_sft", "weighted_mask": True}
CHAT_META = {"skip_system_prompt": False, "enable_rag_tags": True, "system_prompt_override": None}


@pytest.mark.parametrize("kind,block", [("tool", None), ("tool", 64), ("chat", None), ("chat", 48)])
def test_validate_passes_mypt_datasets(tmp_path, kind, block):
    from mypt_lightning.data_prep.validate import format_results, validate_dataset

    golden = GOLDEN["tool_weighted"] if kind == "tool" else [
        e for i, e in enumerate(GOLDEN["chat_rag_weighted_packed"]) if i != TAG_IN_CONTENT]
    root = _write_mypt_dataset(tmp_path / "ds", golden, packed_block=block, weighted=True,
                               metadata=TOOL_META if kind == "tool" else CHAT_META)
    results = validate_dataset(root)
    assert all(r.passed for r in results), format_results(results)
    if kind == "tool":  # the same files under our protocol: the separators are (rightly) errors there
        assert not all(r.passed for r in validate_dataset(root, protocol="ours"))


def test_validate_still_fails_real_problems_in_mypt_datasets(tmp_path):
    from mypt_lightning.data_prep.validate import validate_dataset

    # the original's own bug: a typed "<myPT_eot>" became the tag, trained inside the user message
    root = _write_mypt_dataset(tmp_path / "a", GOLDEN["chat_rag_weighted_packed"], packed_block=None,
                               weighted=True, metadata=CHAT_META)
    failed = {r.name for r in validate_dataset(root) if not r.passed}
    assert "structure" in failed
    # a mask shifted by one position
    ids, ws = GOLDEN["tool_weighted"][0]
    root = _write_mypt_dataset(tmp_path / "b", [(ids, [0.0] + ws[:-1])], packed_block=None, weighted=True,
                               metadata=TOOL_META)
    failed = {r.name for r in validate_dataset(root) if not r.passed}
    assert "mask_alignment" in failed
    # padding that is not <myPT_eot>/weight 0
    root = _write_mypt_dataset(tmp_path / "c", GOLDEN["tool_weighted"][:1], packed_block=128, weighted=True,
                               metadata=TOOL_META)
    w = (root / "train/mask_weighted.bin")
    import numpy as np

    arr = np.fromfile(w, np.float32)
    arr[-1] = 1.0
    w.write_bytes(arr.tobytes())
    (root / "train/mask.bin").write_bytes((arr > 0).astype(np.uint8).tobytes())
    failed = {r.name for r in validate_dataset(root) if not r.passed}
    assert "segment_ids" in failed


def test_inspect_reads_the_layout_from_the_files(tmp_path):
    from mypt_lightning.data_prep.inspect import inspect_report

    root = _write_mypt_dataset(tmp_path / "ds", GOLDEN["tool_weighted"], packed_block=64, weighted=True,
                               metadata=TOOL_META)
    report = inspect_report(root, show_samples=0)
    header = str(getattr(report, "text", report)).splitlines()[0:3]
    assert "packed (block 64), weighted mask, tokenizer gpt2" in header[0]
    assert any("protocol: mypt_tool" in line for line in header)


# ============================================================================ inference: agent, tools


class _Workspace:
    def __init__(self):
        self.calls = []

    def call(self, name, arguments):
        self.calls.append((name, arguments))
        return {"documents": [{"doc_id": "d1", "title": "Intro"}]}


def test_agent_under_mypt_tool_sends_the_controllers_prompts():
    """Each model call gets exactly what core/agent/controller.py would build from the same
    history ("\\n"-joined blocks, the toolcall as generated, json.dumps of the result)."""
    from mypt_lightning.inference.agent import AgentSession
    from mypt_lightning.inference.generation import TextPolicy, encode_with_tags
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    call = '<myPT_toolcall>{"name": "workspace.search", "query": "ML"}</myPT_toolcall>'
    policy = TextPolicy([call + "</myPT_assistant>", "Found Intro.</myPT_assistant>"])
    workspace = _Workspace()
    session = AgentSession(policy, workspace, "Tools: search.", profile="mypt_tool")
    turn = session.ask("Find ML docs")
    assert workspace.calls == [("workspace.search", {"query": "ML"})]
    assert turn.answer == "Found Intro." and turn.clean_end
    result = json.dumps(workspace.calls and {"documents": [{"doc_id": "d1", "title": "Intro"}]}, ensure_ascii=False)
    parts = ["<myPT_system>Tools: search.</myPT_system>", "<myPT_user>Find ML docs</myPT_user>"]
    first = "\n".join(parts + ["<myPT_assistant>"])
    second = "\n".join(parts + [f"<myPT_assistant>{call}</myPT_assistant>",
                                f"<myPT_toolresult>{result}</myPT_toolresult>", "<myPT_assistant>"])
    tok = get_tokenizer()
    assert policy.calls == [tok.decode(encode_with_tags(first)), tok.decode(encode_with_tags(second))]
    # the transcript is the prefix of the mypt_tool training sequence of the same conversation
    ids, _ = get_profile("mypt_tool").serialize({"system": "Tools: search.", "messages": session.messages})
    assert session.tokens == ids[:len(session.tokens)] and ids[len(session.tokens):] == [EOT, 198]


def test_agent_under_mypt_chat_multi_turn_has_no_eot_between_turns():
    from mypt_lightning.inference.agent import AgentSession
    from mypt_lightning.inference.generation import TextPolicy

    policy = TextPolicy(["Hello!</myPT_assistant><myPT_eot>", "Fine.</myPT_assistant>"])
    session = AgentSession(policy, None, LEGACY_CONVERSATION_PROMPT, profile="mypt_chat")
    session.ask("Hi")
    session.ask("How are you?")
    # the second prompt: the chat SFT sequence of the conversation so far (one EOT per conversation)
    ids, _ = get_profile("mypt_chat").serialize({"messages": session.messages})
    assert session.tokens == ids[:-1]  # everything but the final <myPT_eot>
    assert EOT not in session.tokens


def test_trained_system_prompt_defaults():
    from mypt_lightning.tokens.protocol_profiles import phase_from_path, trained_system_prompt
    from mypt_lightning.tokens.system_prompts import AGENTIC_STANDARD_PROMPT, CHAT_SYSTEM_PROMPT, MINIMAL_SYSTEM_PROMPT

    ours = get_profile()
    assert phase_from_path("runs/phase3_chat_sft/export") == 3
    assert phase_from_path("runs/phase1b_context_ext/export") is None
    assert trained_system_prompt(ours, "runs/phase3_chat_sft/export") == CHAT_SYSTEM_PROMPT
    assert trained_system_prompt(ours, "runs/phase6_agentic_rag/last.ckpt") == AGENTIC_STANDARD_PROMPT
    assert trained_system_prompt(ours, "demo/model", phase=None) == MINIMAL_SYSTEM_PROMPT
    assert trained_system_prompt(get_profile("mypt_chat"), "runs/phase6_x") == LEGACY_CONVERSATION_PROMPT
    assert trained_system_prompt(get_profile("mypt_tool"), "m") == LEGACY_AGENTIC_PROMPT


def test_gate_context_uses_the_profile():
    from mypt_lightning.gates.base import GateContext
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    class Case:
        system = "Case system"
        messages = [{"role": "user", "content": "Q"}]

    tok = get_tokenizer()
    ctx = GateContext(None, None, tok, "mypt_chat")
    assert ctx.prompt(Case) == get_profile("mypt_chat").build_prompt(Case.messages, LEGACY_CONVERSATION_PROMPT)
    assert GateContext(None, None, tok).prompt(Case) == get_profile().build_prompt(Case.messages, "Case system")


# ----------------------------------------------------------------------------- clean close per profile


def test_clean_close_is_the_profiles():
    from mypt_lightning.gates.base import closes_cleanly
    from mypt_lightning.tokens.protocol_profiles import NEWLINE_ID

    tool_close = [1, ASSISTANT_CLOSE, NEWLINE_ID, EOT]  # the tool script writes "\n" after every block
    plain_close = [1, ASSISTANT_CLOSE, EOT]
    stopped = [1, ASSISTANT_CLOSE]  # the originals' stop token
    assert get_profile("mypt_tool").clean_closes == ((ASSISTANT_CLOSE, NEWLINE_ID, EOT), (ASSISTANT_CLOSE,))
    assert closes_cleanly(tool_close, "mypt_tool") and closes_cleanly(stopped, "mypt_tool")
    assert not closes_cleanly(plain_close, "mypt_tool")  # not how a tool model was trained to close
    assert closes_cleanly(plain_close, "mypt_chat") and closes_cleanly(stopped, "mypt_chat")
    assert not closes_cleanly(tool_close, "mypt_chat")
    assert closes_cleanly(plain_close) and not closes_cleanly(tool_close) and not closes_cleanly(stopped)
    assert get_profile("mypt_tool").clean_close_text == "</myPT_assistant>\\n<myPT_eot> or </myPT_assistant>"


@pytest.mark.parametrize("protocol,reply,closed", [
    ("mypt_tool", "Hello.</myPT_assistant>\n<myPT_eot>", 1.0),
    ("mypt_tool", "Hello.</myPT_assistant><myPT_eot>", 0.0),
    ("mypt_chat", "Hello.</myPT_assistant><myPT_eot>", 1.0),
    ("ours", "Hello.</myPT_assistant>\n<myPT_eot>", 0.0),
])
def test_gates_judge_the_close_by_the_profile(protocol, reply, closed):
    from mypt_lightning.gates.runner import GATES
    from mypt_lightning.inference.generation import TextPolicy

    results = {phase: GATES[phase].run(TextPolicy(reply), max_cases=4, protocol=protocol, batch_size=1)
               for phase in (1, 2, 3)}
    assert results[1].metrics["closed_in_20"] == closed
    assert results[2].metrics["closed_cleanly"] == closed
    assert all(r.checks["closed"] == bool(closed) for r in results[3].cases)
    if not closed:  # the reason says what the profile's clean close is
        assert f"did not end with {get_profile(protocol).clean_close_text}" in results[1].cases[0].reason
