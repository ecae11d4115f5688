"""Questions that need no workspace lookup (the NO_TOOL episodes of phases 5 and 6).

General knowledge, arithmetic, language help and small talk, each with a correct short
answer, in English and German. Arithmetic is generated, so the pool is effectively
unbounded; the fixed items carry their own ids for the template statistics.
"""

from __future__ import annotations

import random

GENERAL_QA: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
        ("How many continents are there?", "By the most common count, there are seven continents."),
        ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
        ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
        ("What does CPU stand for?", "CPU stands for central processing unit."),
        ("How many minutes are in two hours?", "Two hours have 120 minutes."),
        ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
        ("What language is spoken in Brazil?", "The official language of Brazil is Portuguese."),
        ("How do I say 'thank you' in German?", "In German, 'thank you' is 'danke' or, more formally, 'vielen Dank'."),
        ("What is a synonym for 'quick'?", "A synonym for 'quick' is 'fast'."),
        ("Can you give me a word that rhymes with 'light'?", "Sure: 'night' rhymes with 'light'."),
        ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
        ("Hello, how are you?", "Hello! I'm doing well, thank you. How can I help you today?"),
        ("Thanks for your help!", "You're welcome! Let me know if there is anything else I can do."),
        ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
        ("How many sides does a hexagon have?", "A hexagon has six sides."),
        ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
        ("Which gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
        ("What is the square root of 81?", "The square root of 81 is 9."),
        ("Write a one-sentence greeting for a team meeting.", "Good morning everyone, thanks for joining today's team meeting!"),
        ("What does HTML stand for?", "HTML stands for HyperText Markup Language."),
        ("What is the past tense of 'go'?", "The past tense of 'go' is 'went'."),
        ("How many bytes are in a kilobyte?", "By the SI definition, a kilobyte has 1,000 bytes; a kibibyte has 1,024."),
        ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
        ("Is a tomato a fruit or a vegetable?", "Botanically, a tomato is a fruit, although it is usually cooked as a vegetable."),
        ("What is the speed of light, roughly?", "The speed of light is about 300,000 kilometres per second."),
        ("Can you explain what an acronym is?", "An acronym is a word formed from the first letters of other words, such as NASA."),
        ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ],
    "de": [
        ("Bei wie viel Grad siedet Wasser auf Meereshöhe?", "Auf Meereshöhe siedet Wasser bei 100 Grad Celsius."),
        ("Wie viele Kontinente gibt es?", "Nach der gängigsten Zählung gibt es sieben Kontinente."),
        ("Wer hat den Faust geschrieben?", "Der Faust wurde von Johann Wolfgang von Goethe geschrieben."),
        ("Was ist der größte Planet in unserem Sonnensystem?", "Der größte Planet in unserem Sonnensystem ist Jupiter."),
        ("Wofür steht die Abkürzung PDF?", "PDF steht für Portable Document Format."),
        ("Wie viele Minuten haben drei Stunden?", "Drei Stunden haben 180 Minuten."),
        ("Was ist das chemische Zeichen für Eisen?", "Das chemische Zeichen für Eisen ist Fe."),
        ("Welche Sprache spricht man in Österreich?", "In Österreich spricht man Deutsch."),
        ("Was heißt 'Guten Morgen' auf Englisch?", "'Guten Morgen' heißt auf Englisch 'Good morning'."),
        ("Nenne ein Synonym für 'schnell'.", "Ein Synonym für 'schnell' ist 'rasch'."),
        ("Welches Wort reimt sich auf 'Haus'?", "Zum Beispiel reimt sich 'Maus' auf 'Haus'."),
        ("Wie heißt der längste Fluss Deutschlands?", "Der längste Fluss, der durch Deutschland fließt, ist der Rhein."),
        ("Hallo, wie geht es dir?", "Hallo! Mir geht es gut, danke. Wie kann ich dir helfen?"),
        ("Danke für deine Hilfe!", "Gern geschehen! Melde dich, wenn du noch etwas brauchst."),
        ("Was ist die Hauptstadt von Österreich?", "Die Hauptstadt von Österreich ist Wien."),
        ("Wie viele Ecken hat ein Würfel?", "Ein Würfel hat acht Ecken."),
        ("Was ist die Mehrzahl von 'Baum'?", "Die Mehrzahl von 'Baum' ist 'Bäume'."),
        ("Welches Gas brauchen Menschen zum Atmen?", "Menschen brauchen zum Atmen Sauerstoff."),
        ("Was ist die Wurzel aus 144?", "Die Wurzel aus 144 ist 12."),
        ("Schreib einen kurzen Gruß für eine Geburtstagskarte.", "Alles Gute zum Geburtstag und ein wunderbares neues Lebensjahr!"),
        ("Wofür steht die Abkürzung z. B.?", "Die Abkürzung z. B. steht für 'zum Beispiel'."),
        ("Was ist die Vergangenheitsform von 'gehen'?", "Die Präteritumform von 'gehen' ist 'ging'."),
        ("Wie viele Tage hat ein Schaltjahr?", "Ein Schaltjahr hat 366 Tage."),
        ("Welches ist der höchste Berg Deutschlands?", "Der höchste Berg Deutschlands ist die Zugspitze mit 2.962 Metern."),
        ("Ist der Wal ein Fisch?", "Nein, der Wal ist ein Säugetier und kein Fisch."),
        ("Wer hat die Relativitätstheorie entwickelt?", "Die Relativitätstheorie wurde von Albert Einstein entwickelt."),
        ("Was bedeutet das Wort 'Fernweh'?", "'Fernweh' bezeichnet die Sehnsucht, in ferne Länder zu reisen."),
        ("In welchem Jahr fiel die Berliner Mauer?", "Die Berliner Mauer fiel im Jahr 1989."),
    ],
}

_ARITH = {
    "en": (("What is {a} plus {b}?", "{a} plus {b} is {r}.", "+"),
           ("What is {a} times {b}?", "{a} times {b} is {r}.", "*"),
           ("Calculate {a} minus {b}.", "{a} minus {b} is {r}.", "-")),
    "de": (("Was ist {a} plus {b}?", "{a} plus {b} ergibt {r}.", "+"),
           ("Wie viel ist {a} mal {b}?", "{a} mal {b} ergibt {r}.", "*"),
           ("Rechne {a} minus {b}.", "{a} minus {b} ergibt {r}.", "-")),
}


def general_question(language: str, rng: random.Random) -> tuple[str, str, str]:
    """``(question, answer, template_id)``: a fixed item (70%) or generated arithmetic (30%)."""
    if rng.random() < 0.7:
        i = rng.randrange(len(GENERAL_QA[language]))
        q, a = GENERAL_QA[language][i]
        return q, a, f"general{i}"
    i = rng.randrange(len(_ARITH[language]))
    q, a, op = _ARITH[language][i]
    x, y = rng.randint(2, 99), rng.randint(2, 40 if op == "*" else 99)
    if op == "-" and y > x:
        x, y = y, x
    r = {"+": x + y, "-": x - y, "*": x * y}[op]
    return q.format(a=x, b=y), a.format(a=x, b=y, r=r), f"arith{i}"


__all__ = ["GENERAL_QA", "general_question"]
