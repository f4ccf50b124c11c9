"""Scene graph -> captions: describe/summarise on real-GQA-format graphs and shapes graphs, the
token budget, and the optional LLM client against a local stand-in server."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.data.captions import (
    Focus,
    approx_token_count,
    article,
    describe,
    fit_text,
    is_plural,
    pluralise,
    rank_facts,
    summarise,
    truncate_words,
)
from orchestrator.data.llm_summary import LLMConfig, LLMError, build_messages, llm_summarise
from orchestrator.data.scene_graph import SceneGraph, dumps_scene_graphs, load_scene_graphs, parse_scene_graphs
from orchestrator.data.shapes import make_example

# A hand-written file in GQA's *_sceneGraphs.json layout (ids, names, attributes and relation
# names in GQA's style, including a dangling relation target as the real files have).
GQA_FIXTURE = """
{
  "2354786": {
    "width": 500, "height": 333, "location": "kitchen", "weather": "none",
    "objects": {
      "3735411": {"name": "man", "x": 60, "y": 30, "w": 140, "h": 290, "attributes": ["standing", "young"],
                  "relations": [{"name": "wearing", "object": "3735412"}, {"name": "holding", "object": "3735413"},
                                {"name": "to the left of", "object": "3735414"}, {"name": "wearing", "object": "3735417"}]},
      "3735412": {"name": "shirt", "x": 80, "y": 80, "w": 100, "h": 100, "attributes": ["white", "short sleeved"],
                  "relations": [{"name": "to the left of", "object": "3735414"}]},
      "3735413": {"name": "cup", "x": 170, "y": 150, "w": 30, "h": 40, "attributes": ["red", "ceramic"],
                  "relations": [{"name": "to the right of", "object": "3735412"}, {"name": "above", "object": "3735415"}]},
      "3735414": {"name": "refrigerator", "x": 330, "y": 10, "w": 150, "h": 310, "attributes": ["silver", "large", "metal"],
                  "relations": [{"name": "to the right of", "object": "3735411"}]},
      "3735415": {"name": "table", "x": 120, "y": 230, "w": 200, "h": 100, "attributes": ["wooden", "brown"],
                  "relations": [{"name": "below", "object": "3735413"}, {"name": "near", "object": "3735411"}]},
      "3735416": {"name": "window", "x": 200, "y": 5, "w": 110, "h": 90, "attributes": [], "relations": []},
      "3735417": {"name": "jeans", "x": 90, "y": 180, "w": 90, "h": 130, "attributes": ["blue"], "relations": []},
      "3735418": {"name": "apple", "x": 250, "y": 240, "w": 25, "h": 25, "attributes": ["green"],
                  "relations": [{"name": "on", "object": "3735415"}]},
      "3735419": {"name": "apple", "x": 280, "y": 245, "w": 25, "h": 25, "attributes": ["red"],
                  "relations": [{"name": "on", "object": "3735415"}, {"name": "to the right of", "object": "3735418"},
                                {"name": "near", "object": "9999999"}]}
    }
  },
  "2400001": {
    "width": 640, "height": 480,
    "objects": {
      "100": {"name": "dog", "x": 10, "y": 200, "w": 200, "h": 150, "attributes": ["brown", "sitting"],
              "relations": [{"name": "on", "object": "101"}]},
      "101": {"name": "grass", "x": 0, "y": 300, "w": 640, "h": 180, "attributes": ["green"], "relations": []}
    }
  }
}
"""  # noqa: E501 - the fixture's text is what the tests parse: its lines stay as they are

QUESTION = json.loads("""
{"question": "Is the cup to the left or to the right of the shirt?", "imageId": "2354786", "answer": "right",
 "fullAnswer": "The cup is to the right of the shirt.", "isBalanced": true,
 "types": {"detailed": "relChooser", "semantic": "rel", "structural": "choose"},
 "annotations": {"answer": {}, "question": {"2": "3735413", "10": "3735412"},
                 "fullAnswer": {"1": "3735413", "7": "3735412"}}}
""")


@pytest.fixture()
def graphs(tmp_path):
    path = tmp_path / "val_sceneGraphs.json"
    path.write_text(GQA_FIXTURE)
    return load_scene_graphs(path)


@pytest.fixture()
def kitchen(graphs) -> SceneGraph:
    return graphs["2354786"]


def _shuffled(sg: SceneGraph, seed: int) -> SceneGraph:
    items = list(sg.to_gqa()["objects"].items())
    random.Random(seed).shuffle(items)
    return SceneGraph.from_gqa({**sg.to_gqa(), "objects": dict(items)}, sg.image_id)


def _is_whole_facts_or_compact(summary: str, kitchen: SceneGraph, focus: Focus) -> bool:
    """The summary is a run of whole facts from the top, or a compact form of the first fact
    (possibly missing trailing whole words)."""
    ranked = rank_facts(kitchen, focus)
    if summary == " ".join(f.text for f in ranked[: summary.count(". ") + 1]) or summary == "":
        return True
    words = summary.split()
    return any(words == c.split()[: len(words)] for c in ranked[0].compact)


# ---------------------------------------------------------------- GQA format

def test_load_round_trip(graphs, tmp_path):
    assert list(graphs) == ["2354786", "2400001"]
    assert json.loads(dumps_scene_graphs(graphs)) == json.loads(GQA_FIXTURE)
    k = graphs["2354786"]
    assert k.extra == {"location": "kitchen", "weather": "none"}
    assert k.objects["3735414"].attributes == ["silver", "large", "metal"]
    assert k.objects["3735411"].relations[1].name == "holding"
    # Dangling targets (common in the real files) are skipped, not fatal.
    assert all(o != "9999999" for _, _, o in k.relations())
    with pytest.raises(ValueError):
        parse_scene_graphs({"1": {"width": 1, "height": 1}})


def test_english_helpers():
    assert article("apple") == "an" and article("red apple") == "a" and article("umbrella") == "an"
    assert article("uniform") == "a" and article("hour") == "an"
    assert is_plural("jeans") and is_plural("glasses") and not is_plural("bus") and not is_plural("grass")
    assert pluralise("circle") == "circles" and pluralise("box") == "boxes" and pluralise("cherry") == "cherries"
    assert pluralise("traffic light") == "traffic lights"


# ---------------------------------------------------------------- describe

def test_describe_covers_everything(kitchen):
    text = describe(kitchen)
    for o in kitchen.objects.values():
        assert o.name in text
        for a in o.attributes:
            assert a in text
    for _, rel, _ in kitchen.relations():
        assert f" {rel} " in text
    assert "There is a standing young man." in text
    assert "There are blue jeans." in text
    assert "The man is holding the cup." in text
    assert "The green apple is on the table." in text  # two apples: the colour tells them apart
    assert "The red apple is to the right of the green apple." in text
    assert "9999999" not in text


def test_describe_is_deterministic_and_order_free(kitchen):
    text = describe(kitchen)
    assert describe(kitchen) == text
    for seed in range(5):
        assert describe(_shuffled(kitchen, seed)) == text


def test_describe_other_graph(graphs):
    text = describe(graphs["2400001"])
    assert text == "There is a brown sitting dog. There is a green grass. The dog is on the grass."


# ---------------------------------------------------------------- summarise

def test_summary_relation_focus(kitchen):
    focus = Focus("relation", ("3735411", "3735413"))
    s = summarise(kitchen, focus)
    assert s.startswith("The man is holding the cup.")
    assert approx_token_count(s) <= 77
    assert "man" in s and "cup" in s
    assert _is_whole_facts_or_compact(s, kitchen, focus)


@pytest.mark.parametrize("limit", [3, 5, 8, 12, 20, 33, 50, 77, 200])
def test_summary_never_exceeds_the_limit(kitchen, limit):
    focus = Focus("relation", ("cup", "shirt"))
    s = summarise(kitchen, focus, max_tokens=limit)
    assert approx_token_count(s) <= limit
    assert _is_whole_facts_or_compact(s, kitchen, focus)
    all_words = set(describe(kitchen, include_positions=True).split())
    assert set(s.split()) <= all_words  # no word was cut
    if limit >= 12:
        assert "cup" in s and "shirt" in s
    if limit == 200:
        assert len(s.split(". ")) == len(rank_facts(kitchen, focus))  # everything fits


def test_summary_with_a_pluggable_counter(kitchen):
    words = lambda s: len(s.split())  # noqa: E731 - a stand-in for len(tokenizer(s).input_ids)
    for limit in (4, 9, 16, 30):
        s = summarise(kitchen, Focus("existence", ("apple",)), max_tokens=limit, token_count=words)
        assert 0 < words(s) <= limit
        assert "apple" in s
    s = summarise(kitchen, Focus("existence", ("apple",)), max_tokens=12, token_count=words)
    assert s == "There is a green apple. There is a red apple."
    assert summarise(kitchen, Focus("existence", ("apple",)), max_tokens=3, token_count=words) == "a green apple"
    assert summarise(kitchen, Focus("existence", ("apple",)), max_tokens=1, token_count=words) == "apple"


def test_summary_focus_types(kitchen):
    pos = summarise(kitchen, Focus("position", ("refrigerator",)))
    assert pos.startswith("The refrigerator is on the right side of the image.")
    ex = summarise(kitchen, Focus("existence", ("jeans",)), max_tokens=10)
    assert ex == "There are blue jeans."
    # An object the graph lacks (an existence question answered "no") still gives a valid summary.
    none = summarise(kitchen, Focus("existence", ("giraffe",)), max_tokens=30)
    assert none and "giraffe" not in none and approx_token_count(none) <= 30


def test_focus_from_gqa_question(kitchen):
    focus = Focus.from_gqa_question(QUESTION)
    assert focus == Focus("relation", ("3735413", "3735412"))
    s = summarise(kitchen, focus, max_tokens=20)
    assert s.startswith("The cup is to the right of the shirt.")
    pos_q = {**QUESTION, "types": {"detailed": "positionChoose", "semantic": "attr", "structural": "choose"}}
    assert Focus.from_gqa_question(pos_q).question_type == "position"
    obj_q = {**QUESTION, "types": {"detailed": "exist", "semantic": "obj", "structural": "verify"}}
    assert Focus.from_gqa_question(obj_q).question_type == "existence"
    with pytest.raises(ValueError):
        Focus("colour", ())


def test_summary_is_deterministic(kitchen):
    focus = Focus("relation", ("man", "refrigerator"))
    first = summarise(kitchen, focus, max_tokens=40)
    assert all(summarise(_shuffled(kitchen, s), focus, max_tokens=40) == first for s in range(5))
    assert summarise(kitchen, None, max_tokens=1000) == describe(kitchen)


def test_summary_on_shapes_graphs():
    for i in range(30):
        ex = make_example(21, i, 32)
        sg = ex.scene_graph
        for oid, o in sg.objects.items():
            s = summarise(sg, Focus("existence", (oid,)), max_tokens=20)
            assert approx_token_count(s) <= 20
            assert o.name in s and o.attributes[0] in s
        if ex.spatial_fact:
            f = ex.spatial_fact
            s = summarise(sg, Focus("relation", (f.subject, f.object)), max_tokens=77)
            assert f.relation in s


def test_fit_text_and_truncate():
    text = "The man holds a cup. The cup is red. The table is wooden and long."
    assert fit_text(text, 100) == text
    assert fit_text(text, approx_token_count("The man holds a cup. The cup is red.")) == \
        "The man holds a cup. The cup is red."
    assert fit_text(text, 5) == "The man holds"  # 3 words + 2 special tokens
    assert truncate_words("extraordinarily longwordedness", 4) == "extraordinarily"  # 15 letters: 2 pieces
    assert truncate_words("anything", 1) == ""


# ---------------------------------------------------------------- LLM client

class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        kind, payload = self.server.script.pop(0) if self.server.script else ("ok", "A man holds a cup.")
        if kind == "sleep":
            time.sleep(payload)
            kind, payload = "ok", "late"
        if kind == "status":
            data, code = b'{"error": {"message": "bad request: unknown model"}}', payload
        elif kind == "raw":
            data, code = payload, 200
        else:
            data, code = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": payload},
                 "finish_reason": "stop"}]}).encode(), 200
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.script = [], []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _config(srv, **kw) -> LLMConfig:
    kw = {"retries": 0, "backoff_s": 0.0, "timeout_s": 5.0, **kw}
    return LLMConfig(url=f"http://127.0.0.1:{srv.server_address[1]}", model="tiny-chat", api_key="sk-test", **kw)


def test_llm_summary_request_and_answer(server, kitchen):
    focus = Focus("relation", ("man", "cup"))
    out = llm_summarise(kitchen, focus, _config(server))
    assert out == "A man holds a cup."
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["body"]["model"] == "tiny-chat" and req["body"]["temperature"] == 0.0
    user = req["body"]["messages"][-1]["content"]
    assert "relation question about: man, cup" in user and "The man is holding the cup." in user
    assert build_messages(kitchen, focus, 77) == req["body"]["messages"]


def test_llm_endpoint_forms():
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/chat/completions"):
        assert LLMConfig(url=url, model="m").endpoint() == "http://h:1/v1/chat/completions"
    with pytest.raises(LLMError):
        LLMConfig(url="ftp://h", model="m").endpoint()
    with pytest.raises(LLMError, match="ORCH_LLM_MODEL"):
        LLMConfig.from_env({"ORCH_LLM_URL": "http://h"})
    cfg = LLMConfig.from_env({"ORCH_LLM_URL": "http://h", "ORCH_LLM_MODEL": "m", "ORCH_LLM_TIMEOUT": "3"})
    assert cfg.timeout_s == 3.0 and cfg.api_key is None


def test_llm_overlong_answer_is_shortened_or_refused(server, kitchen):
    long = ("The man is holding a red cup. He wears a white shirt and blue jeans. "
            "A large silver refrigerator stands to his right. Two apples lie on the wooden table.")
    server.script = [("ok", long)]
    out = llm_summarise(kitchen, Focus("relation", ("man", "cup")), _config(server), max_tokens=20)
    assert approx_token_count(out) <= 20
    assert out == "The man is holding a red cup. He wears a white shirt and blue jeans."
    server.script = [("ok", "Extraordinarily " * 40)]
    out = llm_summarise(kitchen, None, _config(server), max_tokens=10)
    assert out.split() == ["Extraordinarily"] * len(out.split()) and approx_token_count(out) <= 10
    server.script = [("ok", long)]
    with pytest.raises(LLMError, match="over the limit of 20"):
        llm_summarise(kitchen, None, _config(server), max_tokens=20, on_overflow="error")


def test_llm_errors_are_clear(server, kitchen):
    server.script = [("status", 400)]
    with pytest.raises(LLMError, match="HTTP 400.*unknown model"):
        llm_summarise(kitchen, None, _config(server))
    server.script = [("raw", b"<html>oops</html>")]
    with pytest.raises(LLMError, match="non-JSON"):
        llm_summarise(kitchen, None, _config(server))
    server.script = [("raw", b'{"choices": []}')]
    with pytest.raises(LLMError, match="unexpected"):
        llm_summarise(kitchen, None, _config(server))
    server.script = [("ok", "   ")]
    with pytest.raises(LLMError, match="empty"):
        llm_summarise(kitchen, None, _config(server))
    server.script = [("sleep", 1.0)]
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="did not answer within 0.2s"):
        llm_summarise(kitchen, None, _config(server, timeout_s=0.2))
    assert time.monotonic() - t0 < 1.0
    # The API key never leaks into messages.
    server.script = [("status", 401)]
    with pytest.raises(LLMError) as info:
        llm_summarise(kitchen, None, _config(server))
    assert "sk-test" not in str(info.value)


def test_llm_retries_server_errors_then_succeeds(server, kitchen):
    server.script = [("status", 503), ("status", 500), ("ok", "Fine.")]
    assert llm_summarise(kitchen, None, _config(server, retries=2)) == "Fine."
    assert len(server.requests) == 3
    server.script = [("status", 503), ("status", 503)]
    with pytest.raises(LLMError, match="after 2 attempt"):
        llm_summarise(kitchen, None, _config(server, retries=1))


def test_llm_unreachable_service():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = LLMConfig(url=f"http://127.0.0.1:{port}", model="m", retries=0, timeout_s=2)
    with pytest.raises(LLMError, match=re.escape(f"127.0.0.1:{port}") + ".*cannot reach"):
        llm_summarise(make_example(0, 0).scene_graph, None, cfg)
