"""Builds tests/data/math_answers.jsonl: labelled (response, gold, expected) cases for the math reward.

Labels come from how each case is constructed (the same value written another way -> True; a different
value -> False; hostile strings -> False), never from running a checker. Run: python tests/data/math_answers_build.py
"""

import json
import os
import random

rng = random.Random(1234)
cases = []


def add(cat, response, gold, expected):
    cases.append({"id": len(cases), "category": cat, "response": response, "gold": gold, "expected": expected})


# --- GSM8K-style numbers: units, commas, currency, decimals, anchors -----------------------------
for k in range(60):
    n = rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 999999)])
    s = f"{n:,}"
    form = k % 10
    resp = [
        f"She has {n - 1} plus one more.\n#### {s}",
        f"So the total is ${s}.\nThe answer is ${s}.",
        f"<think>add them</think><answer>{n}</answer>",
        f"Therefore the answer is \\boxed{{{s}}}.",
        f"It takes {s} minutes in total. The answer is {s} minutes.",
        f"Final answer: {n}.00",
        f"The answer is: **{s}**",
        f"<answer>\n{s} dollars\n</answer>",
        f"Total = {n - 3} + 3 = {n}",
        f"#### {n}\n",
    ][form]
    add("gsm8k", resp, str(n), True)
    wrong = n + rng.choice([1, -1, 10, 100])
    add("gsm8k_wrong", resp.replace(s, f"{wrong:,}").replace(str(n), str(wrong)), str(n), False)

# decimals and percents
for a, b, exp in [("0.5", "\\frac{1}{2}", True), ("12.50", "12.5", True), ("$12.50", "12.5", True),
                  ("25\\%", "25", True), ("25%", "0.25", True), ("2.5", "2.50", True), ("0.125", "\\frac18", True),
                  ("1.5e6", "1500000", True), ("3.0", "3", True), ("-7", "-7", True), ("\\$1,234.56", "1234.56", True),
                  ("0.3333", "\\frac{1}{3}", False), ("0.33", "\\frac{1}{3}", False), ("12.6", "12.5", False),
                  ("25\\%", "0.35", False), ("-7", "7", False), ("1.5e5", "1500000", False)]:
    add("decimal", f"The result is \\boxed{{{a}}}.", b, exp)

# --- MATH-style LaTeX -----------------------------------------------------------------------------
latex_true = [
    ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt3}{2}"), ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"), ("\\frac{3}{4}", "0.75"), ("\\frac{6}{8}", "\\frac34"), ("3\\pi", "3\\pi"),
    ("\\pi/2", "\\frac{\\pi}{2}"), ("2^{10}", "1024"), ("\\sqrt{2}+1", "1+\\sqrt{2}"), ("\\frac{-1}{2}", "-\\frac{1}{2}"),
    ("x^2+2x+1", "(x+1)^2"), ("2x+3", "3+2x"), ("\\frac{x}{2}", "0.5x"), ("a^2-b^2", "(a-b)(a+b)"),
    ("\\left(\\frac{1}{2}\\right)", "\\frac12"), ("\\frac{1}{2}\\pi", "\\frac{\\pi}{2}"), ("10^{-3}", "0.001"),
    ("\\sqrt{50}", "5\\sqrt{2}"), ("\\frac{10}{4}", "\\frac{5}{2}"), ("2\\frac{1}{2}", "\\frac52"),
    ("\\sin 30^\\circ", "\\frac12"), ("\\cos 60^{\\circ}", "0.5"), ("45^\\circ", "45"), ("\\log_2 8", "3"),
    ("e^{0}", "1"), ("\\text{(B)}", "B"), ("(C)", "C"), ("0.\\overline{3}", "\\frac13"), ("\\infty", "\\infty"),
    ("-\\infty", "-\\infty"), ("\\frac{2}{3}", "\\tfrac{2}{3}"), ("1,000,000", "1000000"), ("\\emptyset", "\\varnothing"),
    ("5\\text{ cm}", "5"), ("12\\text{ inches}", "12"), ("\\sqrt[3]{27}", "3"), ("|{-5}|", "5"), ("4!", "24"),
    ("\\binom{5}{2}", "10"), ("\\frac{\\pi}{3}", "60\\cdot\\frac{\\pi}{180}"),
]
for p, g in latex_true:
    add("latex", f"Simplifying, we get $\\boxed{{{p}}}$.", g, True)
    add("latex_swapped", f"The final answer is $\\boxed{{{g}}}$", p, True)
latex_false = [
    ("\\frac{\\sqrt{3}}{3}", "\\frac{\\sqrt3}{2}"), ("2\\sqrt{3}", "\\sqrt{8}"), ("\\frac{3}{5}", "0.75"), ("3\\pi", "3"),
    ("x^2+1", "(x+1)^2"), ("2y+3", "2x+3"), ("2^{11}", "1024"), ("\\frac{1}{2004!}", "\\frac{1}{2006!}"),
    ("2^{-99}", "2^{-98}"), ("1-\\frac{1}{e}", "1+\\frac{1}{e}"), ("4", "4\\sqrt{2}"), ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}"),
    ("\\sin 30^\\circ", "\\frac{\\sqrt3}{2}"), ("(B)", "C"), ("\\infty", "-\\infty"), ("6.28", "2\\pi"), ("3.14", "\\pi"),
    ("\\frac{2}{3}", "\\frac{3}{2}"), ("-\\frac12", "\\frac12"), ("x", "y"), ("\\sqrt{2}", "2"), ("10^{3}", "10^{4}"),
    ("\\frac{(2^{2005}+1)}{3\\cdot 2^{2006}}", "\\frac{1}{3\\cdot 2^{2006}}"), ("1001", "1000"), ("0", "\\emptyset"),
]
for p, g in latex_false:
    add("near_miss", f"So the answer is $\\boxed{{{p}}}$.", g, False)

# --- structures: intervals, sets, tuples, matrices, equations -----------------------------------
struct = [
    ("(1,2)", "(1,2)", True), ("(2,1)", "(1,2)", False), ("(3,1)", "(5,2)", False), ("[1,2)", "[1,2)", True),
    ("[1,2]", "[1,2)", False), ("(-\\infty, 3]", "(-\\infty,3]", True), ("(-\\infty,3)", "(-\\infty, 3]", False),
    ("x \\le 3", "(-\\infty,3]", True), ("1 < x < 2", "(1,2)", True), ("1 \\le x < 2", "(1,2)", False),
    ("(-\\infty,0)\\cup(1,\\infty)", "(-\\infty,0) \\cup (1,\\infty)", True),
    ("(1,\\infty)\\cup(-\\infty,0)", "(-\\infty,0)\\cup(1,\\infty)", True),
    ("(-\\infty,0]\\cup(1,\\infty)", "(-\\infty,0)\\cup(1,\\infty)", False),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True), ("\\{1,2\\}", "\\{1,2,3\\}", False), ("1, 2, 3", "3, 2, 1", True),
    ("2, 3", "2", False), ("-1, 1", "\\pm 1", True), ("1", "\\pm 1", False), ("\\{-1, 1\\}", "1, -1", True), ("3 and 5", "5, 3", True),
    ("(1, -2)", "(1,-2)", True), ("(1,-2)", "(-2,1)", False), ("(1,2,3)", "(1,2,3)", True), ("(1,2,3)", "(1,3,2)", False),
    ("\\left(\\frac12, 3\\right)", "(0.5,3)", True), ("(\\sqrt2, 1)", "(\\sqrt{2},1)", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False),
    ("\\begin{pmatrix}\\frac12\\\\ 0\\end{pmatrix}", "\\begin{pmatrix}0.5\\\\0\\end{pmatrix}", True),
    ("y=2x+1", "y = 2x + 1", True), ("y=2x+1", "2x - y + 1 = 0", True), ("y=2x+1", "y=2x-1", False),
    ("x=5", "5", True), ("x = 5", "x=5", True), ("x=4", "5", False), ("k = 3", "3", True),
    ("x^2+y^2=4", "x^2+y^2=4", True), ("x^2+y^2=4", "x^2+y^2=2", False), ("2x+2y=2", "x+y=1", True),
    ("\\frac{1}{2} < x", "x > \\frac12", True), ("x > 2", "x < 2", False), ("x \\geq 0", "[0,\\infty)", True),
    ("\\emptyset", "\\{\\}", True), ("5+7=12", "12", True), ("5+7=13", "12", False),
]
for p, g, e in struct:
    add("structure", f"Hence the solution is $\\boxed{{{p}}}$.", g, e)

# --- extraction: anchors, self-correction, hedges, truncation ------------------------------------
extra = [
    ("First I got \\boxed{12}. Wait, that is wrong; recomputing, the result is \\boxed{13}.", "13", True),
    ("\\boxed{12} or \\boxed{13}", "13", False), ("It is either \\boxed{12} and also \\boxed{13}", "12", False),
    ("\\boxed{\\boxed{7}}", "7", True), ("\\fbox{7}", "7", True), ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac34", True),
    ("<answer>3/4</answer>", "\\frac{3}{4}", True), ("<answer>12</answer>", "12", True), ("Answer: 42", "42", True),
    ("the answer is 18.", "18", True), ("#### 18.00", "18", True), ("#### 18\nQuestion: next problem... #### 5", "18", False),
    ("Let me compute 5 + 7 =", "12", False), ("\\boxed{\\int_0^1 x^2\\,dx}", "\\frac{1}{3}", False),
    ("\\boxed{\\sum_{k=1}^{100} k}", "5050", False), ("\\boxed{\\lim_{x\\to 0} \\frac{\\sin x}{x}}", "1", False),
    ("", "5", False), ("I don't know.", "5", False), ("The answer is \\boxed{}", "5", False),
    ("The answer is \\boxed{five}", "5", True), ("\\boxed{\\text{seven}}", "7", True),
    ("\\boxed{x=\\frac{1}{2}}", "\\frac12", True), ("The answer is $\\boxed{\\$ 5.00}$", "5", True),
]
for r, g, e in extra:
    add("extraction", r, g, e)

# gold given as a full solution
add("gold_solution", "\\boxed{72}", "Natalia sold 48/2 = 24 clips in May.\n#### 72", True)
add("gold_solution", "\\boxed{71}", "Natalia sold 48/2 = 24 clips in May.\n#### 72", False)
add("gold_solution", "\\boxed{\\frac{1}{2}}", "So the probability is $\\boxed{\\frac{1}{2}}$.", True)

# --- hostile strings: must be False, must not execute, must return quickly -----------------------
MARK = "/tmp/unigrpo_pwned_marker"
hostile = [
    f"\\boxed{{__import__('os').system('touch {MARK}')}}",
    f"<answer>__import__('os').system('touch {MARK}')</answer>",
    f"The answer is __import__('os').system('touch {MARK}')",
    f"#### __import__('os').system('touch {MARK}')",
    f"\\boxed{{\\pi+eval('__import__(\"os\").system(\"touch {MARK}\")')}}",
    "\\boxed{[c for c in ().__class__.__base__.__subclasses__()]}",
    f"\\boxed{{exec('import os; os.system(\"touch {MARK}\")')}}",
    f"\\boxed{{\\text{{__import__('os').system('touch {MARK}')}}}}",
    "\\boxed{9**9**9}", "\\boxed{9^{9^{9}}}", "\\boxed{10^{10^{10}}}", "\\boxed{2^{2^{40}}}", "\\boxed{(10^{10})!}",
    "\\boxed{5^{5^{5^{5^5}}}}", "\\boxed{100000!}", "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "\\boxed{" + "\\frac{1}{" * 100 + "2" + "}" * 100 + "}", "\\boxed{" + "\\sqrt{" * 200 + "2" + "}" * 200 + "}",
    "\\boxed{" * 3000, "$" * 100000, "\\boxed{" + "1+" * 20000 + "1}", "\\boxed{" + "9" * 100000 + "}",
    "\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(2000)) + "}", "\\boxed{\\int_0^\\infty e^{-x^7}\\sin(x^5)dx}",
    "\\boxed{\\sum_{k=1}^{10^{12}}k^7}", "\\boxed{(x+1)^{200}-(x-1)^{200}}", "a" * 100000 + " 5",
]
for h in hostile:
    add("hostile", h, "0" if "pwned" in h else "1", False)
# the os.system payload returns 0: a checker that executed it would judge these "correct" for gold 0
add("hostile", f"\\boxed{{__import__('os').system('touch {MARK}')}}", "0", False)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_answers.jsonl")
with open(out, "w") as f:
    for c in cases:
        f.write(json.dumps(c) + "\n")
print(len(cases), "cases ->", out)
