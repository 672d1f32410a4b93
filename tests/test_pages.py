"""The HTML pages (igds.core.pages): the audit's viewer (igds.audit.view) and the feature cards
(igds.core.cards) open in headless Chromium (Debian's package; setup.sh installs it) from a file,
load nothing from the network, and render what they carry: plotly draws every plot, the
concept table lists the discoveries first with their badges, a planted concept's tokens are
shaded on its side only, the embedded data parse back. test_pipeline opens the CI profile's
own pages with the same helper."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import lxml.html
import numpy as np
import pytest

from igds.audit.stats import AuditSettings, audit
from igds.audit.view import MORE, audit_page
from igds.core.cards import cards_html
from tests.test_audit import PLANT, planted

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def rendered(path: Path, profile: Path):
    """The page's DOM after Chromium ran its scripts (--dump-dom), parsed."""
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: run setup.sh as root (it apt-get installs Debian's chromium) or install it")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000",
         "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return lxml.html.fromstring(proc.stdout)


def offline(source: str) -> None:
    """Nothing to fetch: no external script, stylesheet, image or frame; and no id twice (a
    plot's div sharing its section's id is drawn into the section, or not at all)."""
    tree = lxml.html.fromstring(source)
    ids = tree.xpath("//@id")
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
        assert not tree.xpath(f"//{tag}[@{attr}]"), f"a <{tag} {attr}=...> in a self-contained page"


def drawn(dom, div_id: str) -> int:
    """How many plotly points/bars/cells the plot in div `div_id` drew (0 if plotly did not run)."""
    assert dom.xpath(f"//div[@id='{div_id}']//*[contains(@class, 'main-svg')]"), f"plot {div_id} was not drawn"
    return len(dom.xpath(f"//div[@id='{div_id}']//*[contains(concat(' ', normalize-space(@class), ' '), ' point ')]"))


@pytest.fixture(scope="module")
def audit_html(tmp_path_factory):
    from pipelines.audit.audit import summary

    chosen, rejected, length_c, length_r, topics = planted(share=0.2)
    result = audit(chosen, rejected, length_c, length_r, topics, AuditSettings(n_boot=100, null_replicates=10))
    plant = int(result.concepts.index[result.concepts["members"] == ",".join(map(str, PLANT))][0])
    examples = [{"concept": plant, "pairs": [{
        "pair": "p1", "topic": "algebra", "prompt": "What is 2 + 3? </script><b>not markup</b>",
        "chosen": {"tokens": ["Great", " question", "!", " 2", " +", " 3", " =", " 5"],
                   "acts": [2.0, 1.5, 0.5, 0, 0, 0, 0, 0]},
        "rejected": {"tokens": [" 2", " +", " 3", " =", " 6"], "acts": [0, 0, 0, 0, 0]}}]}]
    text = audit_page("planted", summary(result, chosen.shape[1], 1.0), result.concepts, result.topics, result.null,
                      examples, 0.05)
    path = tmp_path_factory.mktemp("pages") / "audit.html"
    path.write_text(text, encoding="utf-8")
    return path, result, plant


def test_the_audit_page_renders_its_plots_tables_and_highlights(audit_html, tmp_path):
    path, result, plant = audit_html
    offline(path.read_text(encoding="utf-8"))
    dom = rendered(path, tmp_path / "chromium")
    concepts = result.concepts
    found = int(concepts["discovered"].sum())
    listed = found + min(MORE, len(concepts) - found)
    rows = dom.xpath("//table[@id='concept-table']/tbody/tr")
    assert found == 1 and len(rows) == listed
    first = rows[0].xpath("./td")
    assert first[0].text_content() == str(plant) and first[1].text_content() == "chosen"
    assert first[3].text_content() == "10,11,12" and first[0].xpath(".//a/@href") == [f"#c{plant}"]
    assert first[-1].text_content().startswith("kept (") and rows[0].get("id") == f"row{plant}"
    # plotly ran: one forest point per listed concept with a share, the topic cells, the null histogram
    assert drawn(dom, "forest-plot") == concepts.loc[concepts.index.isin([int(r.xpath('./td')[0].text_content())
                                                                    for r in rows]), "chosen_share"].notna().sum()
    drawn(dom, "topics-plot")
    drawn(dom, "null-plot")
    # the planted concept's tokens are shaded on the chosen side only; the prompt stays text
    sides = {d.get("data-side"): d for d in dom.xpath(f"//h3[@id='c{plant}']/following::div[@class='pair'][1]/div")}
    shaded = [(s.text_content(), float(s.get("data-act"))) for s in sides["chosen"].xpath(".//span[@class='tok']")]
    assert shaded == [("Great", 2.0), (" question", 1.5), ("!", 0.5)]
    assert sides["rejected"].xpath(".//span[@class='tok']") == [] and "= 6" in sides["rejected"].text_content()
    assert "<b>not markup</b>" in dom.xpath("//details/div")[0].text_content()
    data = json.loads(dom.xpath("//script[@id='page-data']")[0].text)
    assert data["shown"] == [plant] and len(data["concepts"]) == listed


def test_a_long_member_list_is_cut_with_the_whole_list_on_hover():
    from igds.audit.view import members_cell

    assert members_cell("1,2,3") == "1,2,3"
    cell = lxml.html.fromstring(members_cell(",".join(map(str, range(20)))))
    assert cell.text_content() == "0,1,2,3,4,5,6,7 … (+12)" and cell.get("title") == ",".join(map(str, range(20)))


def test_the_cards_page_renders_each_features_examples(tmp_path):
    entries = [{"feature": 7, "info": {"rank": 1, "freq_prior": 0.5, "freq_general": 0.1, "causal_effect": 0.02,
                                       "causal_effect_lo": 0.01, "causal_effect_hi": float("nan"), "best_alpha": 4.0,
                                       "mean_when_active": 1.2},
                "examples": [{"id": "ex1", "task": "gsm8k", "max": 3.0, "snippet": "", "tokens": ["a", " b", " c"],
                              "acts": [0.0, 3.0, 1.0], "cut_left": True, "cut_right": False}]},
               {"feature": 9, "info": {"rank": 2, "freq_prior": 0.3, "freq_general": 0.2, "mean_when_active": 0.4},
                "examples": []}]
    path = tmp_path / "cards.html"
    path.write_text(cards_html(entries, "response"), encoding="utf-8")
    offline(path.read_text(encoding="utf-8"))
    dom = rendered(path, tmp_path / "chromium")
    assert [h.text_content() for h in dom.xpath("//h2")] == ["Feature 7 (rank 1)", "Feature 9 (rank 2)"]
    assert [(s.text_content(), float(s.get("data-act"))) for s in dom.xpath("//section[@id='f7']//span[@class='tok']")] \
        == [(" b", 3.0), (" c", 1.0)]
    assert "fires on no pool example" in dom.xpath("//section[@id='f9']")[0].text_content()
    data = json.loads(dom.xpath("//script[@id='page-data']")[0].text)
    assert data["cards"][0]["info"]["causal_effect_hi"] is None  # NaN embedded as null, which JSON.parse reads
    assert np.isclose(data["cards"][0]["examples"][0]["acts"][1], 3.0)
