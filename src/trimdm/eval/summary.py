"""A short plain-text summary of eval.json for the terminal (`trimdm eval`, `trimdm demo`)."""
from __future__ import annotations

from trimdm.eval.report import SUBSETS, pairing
from trimdm.eval.stats import difference_se, vs_chance


def text_judge_lines(text: dict) -> list[str]:
    """The text judge's two figures for the samples and for held-out text, with their SEs."""
    lines = [f"{'free text (judge: KJV word n-gram)':<44}{'perplexity':>16}{'unigram entropy':>20}{'n':>6}"]
    for label, key in (("generated (no prompt)", "samples"), ("held-out KJV, same length", "reference")):
        r = text[key]
        lines.append(f"{label:<44}{r['perplexity']:>9.1f} ± {r['perplexity_se']:<4.1f}"
                     f"{r['unigram_entropy']:>12.2f} ± {r['unigram_entropy_se']:<5.2f}{r['n']:>6}")
    return lines


def print_summary(result: dict, out=print) -> None:
    out(f"{'held-out NELBO':<22}{'bits/token':>12}{'perplexity bound':>18}")
    for m, v in result["nelbo"].items():
        out(f"{m:<22}{v['bits_per_token']:>12.3f}{v['perplexity_bound']:>18.1f}")
    for name, v in result.get("conditional_nelbo", {}).items():
        out(f"{name:<22}{v['bits_per_token']:>12.3f}{v['perplexity_bound']:>18.1f}")
    unigram = result["baselines"]["text_unigram_bits"]
    if "text" in result["nelbo"]:
        text = result["nelbo"]["text"]["bits_per_token"]
        out(f"text unigram entropy: {unigram:.3f} bits/token; the model is {unigram - text:.3f} bits/token below it")
    gen = result.get("generation") or {}
    if "t2i" in gen:  # tinyworld's judges
        out(f"{'generation (held-out)':<44}{'result':>10}{'chance':>10}{'n':>6}  beats chance (one-sided p < 0.05)"
            "  | outputs shuffled, pairing p")
        rows = [(f"T2I all attributes right, {g}", v) for g, v in gen["t2i"]["groups"].items()]
        rows.append(("I2T caption all right", gen["i2t"]))
        for key, label in SUBSETS:
            if isinstance(gen["i2t"].get(key), dict):
                rows.append((f"I2T caption all right, {label}", gen["i2t"][key]))
        for label, v in rows:
            out(f"{label:<44}{v['accuracy']:>10.1%}{v['chance']:>10.1%}{v['n']:>6}  "
                f"{vs_chance(v['accuracy'], v['chance'], v['n'])}  | {pairing(v, 'accuracy', percent=True)}")
        for label, v in rows:
            if "attribute_match" in v:
                label = label.replace("all attributes right", "attribute match").replace("all right", "attribute match")
                verdict = vs_chance(v["attribute_match"], v["attribute_match_chance"],
                                    se=difference_se(v, "attribute_match"))
                out(f"{label:<44}{v['attribute_match']:>10.1%}{v['attribute_match_chance']:>10.1%}{v['n']:>6}  "
                    f"{verdict}  | {pairing(v, 'attribute_match', percent=True)}")
        rows = []
        for task, label in (("t2s", "T2S character error rate"), ("s2t", "S2T character error rate")):
            rows.append((label, gen[task]))
            rows += [(f"{label}, {sub}", gen[task][key]) for key, sub in SUBSETS
                     if isinstance(gen[task].get(key), dict)]
        for label, v in rows:
            out(f"{label:<44}{v['cer']:>10.1%}{v['chance']:>10.1%}{v['n']:>6}  "
                f"{vs_chance(v['cer'], v['chance'], higher_is_better=False, se=difference_se(v, 'cer'))}"
                f"  | {pairing(v, 'cer', percent=True)}")
        out(f"Fréchet distance in judge features: images {gen['fid_image']:.2f}, speech {gen['fad_audio']:.2f}")
    if "text" in gen:  # the KJV's text judge
        for line in text_judge_lines(gen["text"]):
            out(line)
    for mc in result.get("multiple_choice", []):
        out(f"multiple choice {mc['file']}: accuracy {mc['accuracy']:.1%} on {mc['questions']} questions "
            f"(chance {mc['chance']:.1%})")
    report = result.get("report", {})
    if report:
        out(f"report: {report.get('html')} (and {report.get('md')})")
