"""Text-to-text: the model writes the target text; scored by exact match and token F1 (SQuAD normalisation)."""

from softprompt.data.readers import require_columns
from softprompt.data.readers import where as row_where
from softprompt.errors import UserError
from softprompt.tasks import metrics
from softprompt.tasks.base import Task


class TextToTextTask(Task):
    name = "text2text"
    description = "JSONL/CSV/TSV: --data.input_column, --data.target_column"
    metric = "exact_match"
    reported = ("exact_match", "f1")
    targets = "the target column"

    def examples(self, rows, source, lines):
        o = self.options
        require_columns(rows, [*self.columns().values(), o.target_column], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            values, target = self.fields(row, where), row.get(o.target_column)
            if target is None:
                raise UserError(f"{where}: column {o.target_column!r} is empty (null)")
            out.append(self.example(values, target=str(target), answers=[str(target)]))
        return out

    def score(self, predictions, examples):
        return metrics.squad(predictions, [e.answers for e in examples])
