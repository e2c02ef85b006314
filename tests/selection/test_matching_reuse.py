"""Transfer matrix, task files, entropy weights and the ensemble's prediction, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from mll_registry.selection.matching import Embedder, WordNetCaptions, transfer_matrix
from mll_registry.selection.reuse import accuracy, ensemble_scores, entropy_weights
from mll_registry.task import Task, TaskClass, TaskError, data_folders


def test_transfer_matrix_by_hand() -> None:
    # 2 classes x 4 nodes
    sims = np.array([[0.9, 0.1, 0.5, -0.2],
                     [0.2, 0.8, 0.7, 0.3]])
    top, top_s, cand, Z = transfer_matrix(sims, top_n=2)
    assert top.tolist() == [[0, 2], [1, 2]]
    np.testing.assert_allclose(top_s, [[0.9, 0.5], [0.8, 0.7]])
    assert cand.tolist() == [0, 1, 2]  # union of the classes' top-n
    np.testing.assert_allclose(Z, [[0.9, 0.0], [0.0, 0.8], [0.5, 0.7]])
    # negative similarities never become negative weights
    _, _, cand2, Z2 = transfer_matrix(sims, top_n=4)
    assert Z2[list(cand2).index(3), 0] == 0.0


def test_entropy_weights_by_hand() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    w = entropy_weights(p)
    assert w[0] == pytest.approx(1 / 1e-8, rel=1e-6)  # certain: H = 0
    assert w[1] == pytest.approx(1 / math.log(2))
    np.testing.assert_allclose(entropy_weights(p, "entropy"), [0.0, math.log(2)], atol=1e-9)
    np.testing.assert_allclose(entropy_weights(p, "uniform"), [1, 1])
    with pytest.raises(ValueError):
        entropy_weights(p, "max")


def test_ensemble_prediction_by_hand() -> None:
    # model 0 is chosen for class 0, model 1 for class 1; one image
    p0 = np.array([[0.6, 0.4]])  # H0 = 0.6730
    p1 = np.array([[0.1, 0.9]])  # H1 = 0.3251
    H0 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    H1 = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    s = ensemble_scores([p0, p1], np.array([[0], [1]]))
    np.testing.assert_allclose(s, [[0.6 / H0, 0.9 / H1]], rtol=1e-6)
    assert s.argmax() == 1
    # k = 2: both models vote for both classes
    s2 = ensemble_scores([p0, p1], np.array([[0, 1], [1, 0]]))
    np.testing.assert_allclose(s2, [[0.6 / H0 + 0.1 / H1, 0.4 / H0 + 0.9 / H1]], rtol=1e-6)
    # the other direction changes the winner here: confident model 1 weighs less
    s3 = ensemble_scores([p0, p1], np.array([[0], [1]]), "entropy")
    np.testing.assert_allclose(s3, [[0.6 * H0, 0.9 * H1]], rtol=1e-6)
    assert s3.argmax() == 0


def test_accuracy_metrics() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    acc = accuracy(scores, np.array([0, 1, 1, 2]))
    assert acc["top1"] == 0.5 and acc["top5"] == 1.0  # 3 classes: top-5 holds everything
    assert acc["per_class"] == {0: 1.0, 1: 0.5, 2: 0.0}
    # with 7 classes top-5 can miss: image 0's target ranks 6th, image 1's 1st
    wide = np.array([[0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],
                     [0.05, 0.60, 0.10, 0.10, 0.05, 0.05, 0.05]])
    acc7 = accuracy(wide, np.array([5, 1]))
    assert acc7["top1"] == 0.5 and acc7["top5"] == 0.5


def test_task_yaml_forms_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("name: pets\ndomain: pet photograph\ntask: image classification\n"
                 "classes:\n  dog: a loyal pet\n  hot dog:\ndata: imgs\nreference: ../other\n")
    t = Task.from_yaml(f)
    assert t.classes == [TaskClass("dog", "a loyal pet"), TaskClass("hot dog", None)]
    assert t.data == (tmp_path / "imgs").resolve()
    assert t.reference == (tmp_path.parent / "other").resolve()
    assert Task.from_dict(t.to_dict()).reference == t.reference
    with pytest.raises(TaskError, match="no classes"):
        Task("empty", [])
    with pytest.raises(TaskError, match="twice"):
        Task("dup", [TaskClass("Hot dog"), TaskClass("hot_dog")])
    f.write_text("name: x\nclasses: 3\n")
    with pytest.raises(TaskError, match="list of names"):
        Task.from_yaml(f)
    with pytest.raises(TaskError, match="not found"):
        Task.from_yaml(tmp_path / "missing.yaml")


def test_data_folders_checks(tmp_path: Path) -> None:
    t = Task("t", [TaskClass("hot dog"), TaskClass("cat")])
    with pytest.raises(TaskError, match="no data folder"):
        data_folders(t)
    with pytest.raises(TaskError, match="does not exist"):
        data_folders(t, tmp_path / "nope")
    write_png(tmp_path / "d" / "hot_dog" / "0.png", 1)
    write_png(tmp_path / "d" / "Cat" / "0.png", 2)
    assert {k: v.name for k, v in data_folders(t, tmp_path / "d").items()} == {
        "hot dog": "hot_dog", "cat": "Cat"}
    write_png(tmp_path / "d" / "zebra" / "0.png", 3)
    with pytest.raises(TaskError, match="does not name.*zebra"):
        data_folders(t, tmp_path / "d")


def test_wordnet_descriptions_use_glosses_domain_and_own_description() -> None:
    task = Task("t", [TaskClass("hot dog", "a sausage in a bun")], domain="emoji")
    d = WordNetCaptions().describe(task.classes[0], task)
    assert d[0] == "a emoji of a hot dog."
    assert "hot dog, a sausage in a bun" in d
    assert any("frankfurter" in x or "sausage" in x for x in d[4:])  # a WordNet gloss


def test_offline_sentence_embeddings_rank_related_text_first() -> None:
    emb = Embedder()
    e = emb.encode(["a dog", "a puppy", "a spaceship"])
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


@pytest.mark.parametrize(("content", "match"), [
    ("- a\n- b\n", "YAML mapping"),
    ("name: t\nclasses: [dog, null]\n", "class #2 must be a non-empty string"),
    ("name: t\nclasses: [dog, [a, b]]\n", "class #2"),
    ("name: t\nclasses: [dog, true]\n", "class #2"),
    ("name: t\nclasses: {dog: [x]}\n", "description of 'dog'"),
    ("name: [t]\nclasses: [dog]\n", "`name` must be"),
    ("name: t\nclasses: !!python/object/apply:os.system ['touch /tmp/x']\n", "not valid YAML"),
    ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\nclasses: [dog]\n", "aliases"),
    ("name: t\nclasses: [\n", "not valid YAML"),
])
def test_bad_task_files_are_refused_clearly(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "task.yaml"
    f.write_text(content)
    with pytest.raises(TaskError, match=match):
        Task.from_yaml(f)


def test_huge_task_files_are_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "task.yaml"
    f.write_text("name: t\nclasses:\n" + "".join(f"  - c{i}\n" for i in range(200_000)))
    with pytest.raises(TaskError, match="larger than"):
        Task.from_yaml(f)


class _FakeEmbedder:
    """Deterministic embeddings (a hash of the text), counting how often it is asked."""

    name = "fake"
    key = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts, batch_size: int = 128) -> np.ndarray:
        import hashlib

        self.calls += 1
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), np.uint8)[:8].astype(np.float32)
                for t in texts]
        e = np.stack(rows) + 1.0
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def test_openai_compatible_provider_on_a_loopback_server(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real httpx client against a local /chat/completions server: descriptions parsed from
    its answer, the key sent only as a bearer header, an error status named; a repeated task is
    answered from the description cache without asking the server again."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from mll_registry.selection.matching import OpenAICompatibleCaptions, describe_and_embed

    seen: list[dict] = []
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                         "body": body})
            answer = {"choices": [{"message": {"content": "1. a furry pet\n- a barking animal\n\n"}}]}
            data = json.dumps(answer).encode()
            self.send_response(status[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
        provider = OpenAICompatibleCaptions(url, n=5)
        task = Task(name="pets", classes=[TaskClass("dog"), TaskClass("cat", "a small feline")])
        got = provider.describe(task.classes[1], task)
        assert got == ["a furry pet", "a barking animal", "cat, a small feline"]
        assert seen[0]["path"] == "/v1/chat/completions"
        assert seen[0]["auth"] == "Bearer sk-test-secret"
        assert "sk-test-secret" not in json.dumps(seen[0]["body"])
        assert "cat" in seen[0]["body"]["messages"][0]["content"]
        emb = _FakeEmbedder()
        d1, e1 = describe_and_embed(task, provider, emb, root=tmp_path)
        asked, encoded = len(seen), emb.calls
        d2, e2 = describe_and_embed(task, provider, emb, root=tmp_path)
        assert len(seen) == asked and emb.calls == encoded  # the cache answered
        assert d1 == d2 and np.array_equal(e1, e2)
        assert not any(b"sk-test-secret" in f.read_bytes() for f in tmp_path.rglob("*")
                       if f.is_file())
        status[0] = 500
        with pytest.raises(RuntimeError, match="answered HTTP 500"):
            provider.describe(task.classes[0], task)
    finally:
        server.shutdown()
