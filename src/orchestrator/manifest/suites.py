"""The evaluation suites, in one table: each suite's name, the class that runs it, what it needs
from the manifest's eval section and what it does. The manifest validates `eval.suites` against
it, `orchestrator.eval.suites` imports each implementation from it when first asked, a variant's
spec names the suites it serves from it, and `orch eval --help` lists it. A new suite is one row
here and its class in `orchestrator/eval/` (the class is named by string: manifest sits below eval
in the house, so it never imports it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    implementation: str        # "module:Class" under orchestrator.eval
    summary: str               # one line: what it reports (orch eval --help)
    needs: str | None = None   # the eval field it cannot run without (checked when a manifest loads)
    # Scores captions against images: with the model under test when it is a matcher, else with
    # eval.clip (the capability check in manifest/experiment.py asks the variant's spec which).
    scores_pairs: bool = False


SUITE_TABLE: tuple[SuiteEntry, ...] = (
    SuiteEntry("spatial", "orchestrator.eval.suites:SpatialSuite",
               "object and relation accuracy of generated images (GenEval's position rule)"),
    SuiteEntry("clip_r_precision", "orchestrator.eval.clip_r_precision:ClipRPrecisionSuite",
               "CLIP-R-Precision, 99 negatives, mean ± std over chunks", needs="clip"),
    SuiteEntry("clip_score", "orchestrator.eval.clip_score:ClipScoreSuite",
               "CLIPScore (Hessel et al.) of each generated image against its prompt, mean with a 95% interval",
               needs="clip"),
    SuiteEntry("pick_score", "orchestrator.eval.clip_score:PickScoreSuite",
               "PickScore (Kirstain et al.) of each generated image against its prompt, mean with a 95% interval",
               needs="pick_score"),
    SuiteEntry("winoground", "orchestrator.eval.winoground:WinogroundSuite",
               "Winoground text/image/group scores", scores_pairs=True),
    SuiteEntry("fid", "orchestrator.eval.fid:FIDSuite", "FID and KID on Inception features", needs="fid_weights"),
    SuiteEntry("fid_clip", "orchestrator.eval.fid:FIDClipSuite", "FID on CLIP image features", needs="clip"),
    SuiteEntry("matching", "orchestrator.eval.matching:MatchingSuite",
               "image-text matching accuracy on data.eval's benchmark", scores_pairs=True),
    SuiteEntry("drawbench", "orchestrator.eval.drawbench:DrawBenchSuite",
               "DrawBench: CLIP-R-Precision per category and a sheet per category for human grading", needs="clip"),
    SuiteEntry("geneval", "orchestrator.eval.geneval_suite:GenEvalSuite",
               "GenEval: per-task accuracy of K images per prompt judged by a detector and a colour CLIP, and their "
               "mean"),
    SuiteEntry("consistency", "orchestrator.eval.consistency:ConsistencySuite",
               "a chain's images from one embedding show the same objects, against chance"),
)

SUITES: tuple[str, ...] = tuple(s.name for s in SUITE_TABLE)
SUITE_BY_NAME: dict[str, SuiteEntry] = {s.name: s for s in SUITE_TABLE}
SUITE_NEEDS: dict[str, str] = {s.name: s.needs for s in SUITE_TABLE if s.needs}
SCORER_SUITES: tuple[str, ...] = tuple(s.name for s in SUITE_TABLE if s.scores_pairs)


def check_suite_names(names, where: str) -> None:
    """Refuse a suite name the table does not hold, naming the known ones."""
    unknown = [n for n in names if n not in SUITE_BY_NAME]
    if unknown:
        raise ValueError(f"{where}: unknown suite(s) {', '.join(map(repr, unknown))}; known suites: "
                         f"{', '.join(SUITES)}")
