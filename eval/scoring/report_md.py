"""The report as a Markdown summary: headline with CIs and chance, then the breakdown tables."""

from __future__ import annotations

from eval.scoring.metrics import HEADLINE

TITLES = {"attribution_accuracy": "Attribution accuracy", "nmi": "NMI",
          "detection_accuracy": "Detection accuracy"}
BREAKDOWNS = (("by_semantic", "By semantic (seen in training or not)"),
              ("by_corruption_seen", "By corruption (clean, seen in training, unseen)"),
              ("clean_vs_corrupted", "Clean vs corrupted"),
              ("by_corruption_severity", "Per corruption x severity"))


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def render(report: dict, figures: dict[str, str] | None = None) -> str:
    """Markdown text; `figures` maps "confusion"/"corruption" to PNG file names to link."""
    ci = report.get("ci")
    lines = [f"# Attribution88 score: {report['split']} split", "",
             f"{report['count']} images, {len(report['classes'])} classes; benchmark manifest "
             f"sha256 `{report['benchmark']['manifest_sha256'][:16]}`, submission sha256 "
             f"`{report['submission']['sha256'][:16]}`.", ""]
    level = f"{round(ci['level'] * 100)}% CI" if ci else "CI"
    rows = []
    for m in HEADLINE:
        interval = f"[{ci[m][0]:.4f}, {ci[m][1]:.4f}]" if ci else "not computed"
        rows.append([TITLES[m], _f(report[m]), interval, _f(report["chance"][m])])
    rows.append(["Balanced accuracy", _f(report["balanced_accuracy"]), "", ""])
    lines += _table(["Figure", "Value", level, "Chance"], rows)
    if ci:
        lines += [f"Percentile bootstrap, {ci['resamples']} resamples, seed {ci['seed']}; chance "
                  "is always answering the most frequent class (NMI: 0).", ""]

    lines += ["## Per class", ""]
    lines += _table(["Class", "Precision", "Recall", "F1", "Support"],
                    [[c, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]), str(v["support"])]
                     for c, v in report["per_class"].items()])
    if figures and "confusion" in figures:
        lines += [f"![confusion matrix]({figures['confusion']})", ""]

    for key, title in BREAKDOWNS:
        lines += [f"## {title}", ""]
        lines += _table(["Group", "Count", *(TITLES[m] for m in HEADLINE)],
                        [[g, str(v["count"]), *(_f(v[m]) for m in HEADLINE)]
                         for g, v in report[key].items()])
    if figures and "corruption" in figures:
        lines += [f"![accuracy per corruption]({figures['corruption']})", ""]

    scores = report.get("scores")
    if scores:
        lines += ["## From the score columns", "",
                  f"Detection ROC-AUC ({scores['detection_auc_from']}): "
                  f"{_f(scores['detection_auc'])}", ""]
        if "auc_per_class" in scores:
            lines += [f"One-vs-rest ROC-AUC, macro mean over defined classes: "
                      f"{_f(scores['auc_macro'])}", ""]
            lines += _table(["Class", "ROC-AUC"], [[c, _f(a)] for c, a in
                                                   scores["auc_per_class"].items()])
            d = scores["decentralised"]
            lines += [f"Decentralised reading (Khoo et al. 2022; a source claims an image at "
                      f"score >= {scores['threshold']}; real by the detector from "
                      f"{d['called_real_from']}):", "",
                      f"- multiple-attribution rate: {_f(d['multiple_attribution_rate'])}",
                      f"- self-contradiction rate: {_f(d['self_contradiction_rate'])}",
                      f"- unclaimed-fake rate: {_f(d['unclaimed_fake_rate'])}", ""]
            lines += _table(["Source", "Accuracy", "Precision", "Recall", "Claim rate"],
                            [[s, _f(v["accuracy"]), _f(v["precision"]), _f(v["recall"]),
                              _f(v["claim_rate"])] for s, v in d["per_source"].items()])
    return "\n".join(lines)
