"""Tokenizer evaluation: compression ratio (UTF-8 bytes per token; higher = fewer tokens for the same text).

Measured per text type on short built-in samples (prose, code, math, German, Korean, Chinese) and per data source on a
bounded sample of each source's train and val shards, optionally beside a second tokenizer for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nanocode.core.interfaces import DataMixture, DataSource, Tokenizer
from nanocode.data import parquet

# Short representative texts, written for nanocode (no external data needed).
SAMPLE_TEXTS: dict[str, str] = {
    "prose": (
        "The city council voted on Tuesday to extend the night bus service for another two years, after a pilot "
        "scheme showed that ridership had doubled since it began. Supporters argued that shift workers, students and "
        "hospital staff depend on the buses to get home safely, while critics questioned whether the budget could "
        "absorb the extra cost without cuts elsewhere. Engineers at the transport office said the new timetable would "
        "add fifteen routes, most of them connecting the outer districts to the central station. Meanwhile, "
        "researchers at the university published a study suggesting that better public transport reduces the number "
        'of late-night car journeys, which in turn lowers accident rates. "We were surprised by how quickly people '
        'changed their habits," said one of the authors. The council will review the results again next spring.'
    ),
    "code": '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Inventory:
    """Items in stock, persisted as JSON."""

    path: Path
    items: dict[str, int] = field(default_factory=dict)

    def load(self) -> None:
        if self.path.exists():
            self.items = json.loads(self.path.read_text())

    def add(self, name: str, count: int = 1) -> int:
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        self.items[name] = self.items.get(name, 0) + count
        return self.items[name]

    def remove(self, name: str, count: int = 1) -> int:
        left = self.items.get(name, 0) - count
        if left < 0:
            raise KeyError(f"not enough {name!r} in stock ({self.items.get(name, 0)} < {count})")
        self.items[name] = left
        return left

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.items, indent=2, sort_keys=True))
        tmp.replace(self.path)


def main(argv: list[str]) -> int:
    inv = Inventory(Path(argv[1]))
    inv.load()
    for arg in argv[2:]:
        name, _, count = arg.partition("=")
        print(name, inv.add(name, int(count or 1)))
    inv.save()
    return 0
''',
    "math": (
        r"Let $f(x) = \sum_{n=0}^{\infty} \frac{x^n}{n!}$. Then $f'(x) = f(x)$ and $f(0) = 1$, so $f(x) = e^x$. "
        r"For the integral $\int_0^1 x^2 e^{x} \, dx$, integrate by parts twice: "
        r"$\int x^2 e^x dx = x^2 e^x - 2 \int x e^x dx = (x^2 - 2x + 2) e^x + C$, hence the value is $e - 2 "
        r"\approx 0.71828$. Theorem 3.1. If $A \in \mathbb{R}^{n \times n}$ is symmetric, then all eigenvalues "
        r"$\lambda_1 \le \lambda_2 \le \dots \le \lambda_n$ are real and $\lambda_n = \max_{\|v\|_2 = 1} v^\top A v$. "
        r"Solve $3x + 7 = 22$: $3x = 15$, so $x = 5$. The quadratic $x^2 - 5x + 6 = 0$ has roots $x = 2$ and $x = 3$, "
        r"since $(x-2)(x-3) = x^2 - 5x + 6$. Probability: $P(A \mid B) = \frac{P(B \mid A) P(A)}{P(B)}$ with "
        r"$P(B) = 0.25$, $P(A) = 0.1$, $P(B \mid A) = 0.9$ gives $P(A \mid B) = 0.36$."
    ),
    "german": (
        "Am Dienstag hat der Stadtrat beschlossen, den Nachtbusverkehr um weitere zwei Jahre zu verlängern, nachdem "
        "ein Pilotprojekt gezeigt hatte, dass sich die Zahl der Fahrgäste seit dem Start verdoppelt hat. Befürworter "
        "betonten, dass Schichtarbeiter, Studierende und Krankenhauspersonal auf die Busse angewiesen seien, um sicher "
        "nach Hause zu kommen. Kritiker fragten dagegen, ob der Haushalt die zusätzlichen Kosten ohne Kürzungen an "
        "anderer Stelle tragen könne. Laut dem Verkehrsamt umfasst der neue Fahrplan fünfzehn zusätzliche Linien, die "
        "größtenteils die Außenbezirke mit dem Hauptbahnhof verbinden."
    ),
    "korean": (
        "시의회는 화요일에 심야 버스 운행을 2년 더 연장하기로 의결했다. 시범 사업 기간 동안 이용객 수가 두 배로 늘어났기 "
        "때문이다. 찬성 측은 교대 근무자와 학생, 병원 직원들이 안전하게 귀가하기 위해 이 버스에 의존하고 있다고 강조했다. "
        "반면 비판하는 쪽에서는 다른 예산을 줄이지 않고 추가 비용을 감당할 수 있는지 의문을 제기했다. 교통국에 따르면 새 "
        "시간표에는 열다섯 개의 노선이 추가되며, 대부분은 외곽 지역과 중앙역을 연결한다. 연구진은 대중교통이 좋아지면 "
        "심야 차량 운행이 줄고 사고율도 낮아진다는 연구 결과를 발표했다."
    ),
    "chinese": (
        "市议会周二投票决定将夜间公交服务再延长两年，因为试点项目显示，自启动以来乘客人数已经翻了一番。支持者认为，"
        "轮班工人、学生和医院员工都依靠这些公交车安全回家；批评者则质疑，在不削减其他开支的情况下，预算能否承担额外的费用。"
        "交通部门的工程师表示，新的时刻表将增加十五条线路，其中大部分连接外围城区和中央车站。与此同时，大学的研究人员发表了一项"
        "研究，认为更好的公共交通可以减少深夜驾车出行，从而降低事故率。"
    ),
}


@dataclass(frozen=True)
class Row:
    """One line of the table: a text (or source split) with its size and token counts."""

    name: str
    n_bytes: int
    tokens: int
    other_tokens: int | None = None

    @property
    def ratio(self) -> float:
        return self.n_bytes / max(self.tokens, 1)

    @property
    def other_ratio(self) -> float | None:
        return None if self.other_tokens is None else self.n_bytes / max(self.other_tokens, 1)


def split_sample(source: DataSource, split: str, max_chars: int) -> list[str]:
    """The first documents of a source split, up to `max_chars` characters (the last one cropped to fit)."""
    docs, left = [], max_chars
    for path in source.shard_paths(split):
        for index in range(parquet.num_row_groups(path)):
            for doc in parquet.read_row_group(path, index):
                docs.append(doc[:left])
                left -= len(docs[-1])
                if left <= 0:
                    return docs
    return docs


def mixture_samples(mixture: DataMixture, max_chars: int) -> dict[str, list[str]]:
    """`<source>-train` and `<source>-val` samples of every source of the mixture."""
    return {
        f"{name}-{split}": split_sample(source, split, max_chars)
        for name, source in mixture.sources.items()
        for split in ("train", "val")
    }


def evaluate(
    tokenizer: Tokenizer, texts: Mapping[str, str | Sequence[str]], other: Tokenizer | None = None
) -> list[Row]:
    """A row per named text (a string, or a list of documents counted together)."""
    rows = []
    for name, docs in texts.items():
        docs = [docs] if isinstance(docs, str) else list(docs)
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        tokens = sum(map(len, tokenizer.encode_batch(docs)))
        other_tokens = sum(map(len, other.encode_batch(docs))) if other is not None else None
        rows.append(Row(name, n_bytes, tokens, other_tokens))
    return rows


def markdown_table(rows: Sequence[Row], *, ours: str = "ours", other: str = "other") -> str:
    """The rows as a markdown table; with a comparison, `diff` is how many more bytes per token ours packs."""
    compare = any(r.other_tokens is not None for r in rows)
    head = ["text", "bytes", f"{ours} tokens", f"{ours} bytes/token"]
    if compare:
        head += [f"{other} tokens", f"{other} bytes/token", "diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [r.name, f"{r.n_bytes:,}", f"{r.tokens:,}", f"{r.ratio:.2f}"]
        if compare:
            cells += [f"{r.other_tokens:,}", f"{r.other_ratio:.2f}", f"{(r.ratio / r.other_ratio - 1):+.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tok_eval(
    tokenizer: Tokenizer,
    mixture: DataMixture | None = None,
    *,
    other: Tokenizer | None = None,
    sample_chars: int = 1_000_000,
    ours: str = "ours",
    other_name: str = "other",
) -> tuple[list[Row], str]:
    """Rows for the built-in text types, then for each mixture source's splits; and the markdown report."""
    rows = evaluate(tokenizer, SAMPLE_TEXTS, other)
    if mixture is not None:
        rows += evaluate(tokenizer, mixture_samples(mixture, sample_chars), other)
    report = (
        f"# Tokenizer compression ({tokenizer.vocab_size:,} ids)\n\n"
        "UTF-8 bytes per token: higher packs more text into each token. Text types are short built-in samples; "
        f"`<source>-<split>` rows are the first {sample_chars:,} chars of that split."
        + (f" diff: how many more bytes per token {ours} packs than {other_name}." if other is not None else "")
        + "\n\n"
        + markdown_table(rows, ours=ours, other=other_name)
    )
    return rows, report
