"""Phase 1 gate (format lock): simple prompts get a short answer closed by
``</myPT_assistant><myPT_eot>`` within 20 tokens, nothing runs away, EN and DE both work.

Per case (greedy, up to 64 new tokens so a late close is told apart from a runaway)::

    answered        the answer text is not empty
    closed_in_20    generation ended with </myPT_assistant><myPT_eot> within 20 tokens
    no_runaway      a stop token came at all within the 64-token budget
    language        the answer is not recognisably in the other language ("Yes." to a German
                    prompt); a neutral answer ("Berlin", "5") is fine

"Answers in EN and DE" is also measured directly: 16 of the prompts call for an answer that
carries its language ("Sag hallo." -> "Hallo!", "Is fire hot?" -> "Yes."); answers_in_en /
answers_in_de are the shares of those answered recognisably in the prompt's language (so a
model that answers everything with "4" or "Ne." fails).

Passes with pass_rate >= 0.90, each language's pass rate >= 0.80, and answers_in_en and
answers_in_de >= 0.50. The prompts are
written for the gate (simple questions and instructions, 25 EN + 25 DE); a few echo the
guide's own example ("Say hello."), most are phrasings the format-lock generator does not use.
"""

from __future__ import annotations

from mypt_lightning.gates.base import Case, CaseResult, Criterion, Gate, GateContext, close_text, closes_cleanly, explain
from mypt_lightning.gates.language import language_of, same_language
from mypt_lightning.tokens.protocol import parse_assistant_output
from mypt_lightning.tokens.system_prompts import MINIMAL_SYSTEM_PROMPT

CLOSE_WITHIN = 20
RUNAWAY_BUDGET = 64

# (prompt, language_marked): a marked prompt's natural answer carries its language ("Yes" /
# "Ja", "Hello" / "Hallo"); answers_in_en / answers_in_de count how many of them get one.
PROMPTS = {
    "en": [
        ("Say hello.", True), ("What is the capital of Italy?", False),
        ("What colour is the sky on a sunny day?", False), ("Name a fruit.", False),
        ("How many days are in a week?", False), ("What is 2 plus 3?", False), ("Is fire hot?", True),
        ("Say thank you.", True), ("Which day comes after Monday?", False),
        ("Give me a word that means happy.", False), ("What is the opposite of up?", False),
        ("What is 'Haus' in English?", False), ("What is the first letter of the word 'dog'?", False),
        ("Reply with yes.", True), ("Which month comes before June?", False),
        ("Name an animal that can fly.", False), ("How many legs does a cat have?", False),
        ("What is 10 minus 4?", False), ("Good morning!", True), ("What is the capital of Spain?", False),
        ("Is the sea salty?", True), ("Name a colour.", False), ("What number comes after nine?", False),
        ("Say goodbye.", True), ("Do dogs bark?", True),
    ],
    "de": [
        ("Sag hallo.", True), ("Was ist die Hauptstadt von Italien?", False),
        ("Welche Farbe hat der Himmel an einem sonnigen Tag?", False), ("Nenne eine Frucht.", False),
        ("Wie viele Tage hat eine Woche?", False), ("Was ist 2 plus 3?", False), ("Ist Feuer heiß?", True),
        ("Sag danke.", True), ("Welcher Tag kommt nach Montag?", False),
        ("Nenne ein Wort für glücklich.", False), ("Was ist das Gegenteil von oben?", False),
        ("Was heißt 'house' auf Deutsch?", False), ("Was ist der erste Buchstabe des Wortes 'Hund'?", False),
        ("Antworte mit ja.", True), ("Welcher Monat kommt vor Juni?", False),
        ("Nenne ein Tier, das fliegen kann.", False), ("Wie viele Beine hat eine Katze?", False),
        ("Was ist 10 minus 4?", False), ("Guten Morgen!", True), ("Was ist die Hauptstadt von Spanien?", False),
        ("Ist das Meer salzig?", True), ("Nenne eine Farbe.", False), ("Welche Zahl kommt nach neun?", False),
        ("Verabschiede dich.", True), ("Bellen Hunde?", True),
    ],
}


class Phase1Gate(Gate):
    phase = 1
    name = "format_lock"
    description = ("closes with </myPT_assistant><myPT_eot> within 20 tokens on simple prompts, "
                   "no runaway, answers in EN and DE")
    criteria = (
        Criterion("pass_rate", ">=", 0.90, hint="more steps (or a higher lr) on the format-lock data; see the failed cases' reasons in the report"),
        Criterion("pass_rate_en", ">=", 0.80, hint="more steps; more English format-lock/echo examples"),
        Criterion("pass_rate_de", ">=", 0.80, hint="more steps; more German format-lock/echo examples (generators' --language mixed or de)"),
        Criterion("answers_in_en", ">=", 0.50, hint="more steps; more English data (the model answers in the wrong language)"),
        Criterion("answers_in_de", ">=", 0.50, hint="more German data and more steps (German answers are learned last)"),
    )

    def cases(self, workspace=None) -> list[Case]:
        out = []
        for i in range(max(len(p) for p in PROMPTS.values())):  # interleaved: EN, DE, EN, DE, ...
            for lang in ("en", "de"):
                if i < len(PROMPTS[lang]):
                    prompt, marked = PROMPTS[lang][i]
                    out.append(Case(f"p1-{lang}-{i:02d}", "simple", lang, [{"role": "user", "content": prompt}],
                                    MINIMAL_SYSTEM_PROMPT, {"language_marked": marked}))
        return out

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        prompt = ctx.prompt(case)
        gen = ctx.policy(prompt, max_new_tokens=RUNAWAY_BUDGET)
        return judge(case, gen.tokens, gen.stop_reason, ctx.render(prompt), ctx.tok, profile=ctx.profile)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        for check in ("closed_in_20", "no_runaway", "language", "answered"):
            out[check] = sum(r.checks[check] for r in results) / len(results) if results else 0.0
        for lang in ("en", "de"):
            marked = [r.details["recognised_language"] for r in results
                      if r.language == lang and "recognised_language" in r.details]
            if marked:  # absent when --max_cases left none of them (the criterion is then skipped)
                out[f"answers_in_{lang}"] = sum(marked) / len(marked)
        return out


def judge(case: Case, tokens: list[int], stop_reason: str, prompt_text: str, tok, *, profile=None) -> CaseResult:
    """The verdict on one generation (``tokens``: the new ids, stop token included); ``profile``:
    the protocol the model was trained on, which says what a clean close is."""
    parsed = parse_assistant_output(tokens, tokenizer=tok)
    answer = parsed.answer.strip()
    checks = {
        "answered": bool(answer),
        "closed_in_20": closes_cleanly(tokens, profile) and len(tokens) <= CLOSE_WITHIN,
        "no_runaway": stop_reason == "stop_token",
        "language": same_language(answer, case.language),
    }
    reasons = {
        "answered": "empty answer",
        "closed_in_20": (f"closed after {len(tokens)} tokens" if closes_cleanly(tokens, profile)
                         else f"did not end with {close_text(profile)}"),
        "no_runaway": f"no stop token within {len(tokens)} tokens ({stop_reason})",
        "language": f"answer is not in {case.language.upper()}",
    }
    details = {"answer": answer, "num_tokens": len(tokens), "stop_reason": stop_reason}
    if case.expect.get("language_marked"):
        details["recognised_language"] = language_of(answer) == case.language
    return CaseResult(case.id, case.category, case.language, prompt_text, tok.decode(tokens), all(checks.values()),
                      checks, explain(checks, reasons), details)


GATE = Phase1Gate()
