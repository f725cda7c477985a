"""Reports: the study's tables and figures from recorded runs, beside the published numbers.

Pure functions over plain data (:class:`~core.reports.runs.RunData` dicts), so they run without a
database, a web server or TensorFlow:

- :mod:`core.reports.references`: He et al. 2016's CIFAR-10 and ImageNet numbers and the COCO
  multi-label baseline (Chen et al. 2019), each with its source, and the seed study's Tables 1–3
  as printed (:mod:`core.reports.study`: that row type and the checks that flag it);
- :mod:`core.reports.tables`: Table 1 and a Table 3-like large-dataset table as JSON, CSV,
  Markdown;
- :mod:`core.reports.figures`: PNG/SVG figures (matplotlib, imported lazily);
- :mod:`core.reports.experiments`: grid and random-search cells, mean ± std over seeds;
- :mod:`core.reports.progress`: live progress and the "behind the curve" check;
- :mod:`core.reports.bundle`: reproducibility zips;
- :mod:`core.reports.runs`: the :class:`RunData` shape (``jobs.reports`` fills it from records).
"""

from core.reports.figures import FIGURES, FigureDataError, figure
from core.reports.runs import RunData
from core.reports.tables import Table, large_dataset_table, table1

__all__ = [
    "FIGURES",
    "FigureDataError",
    "RunData",
    "Table",
    "figure",
    "large_dataset_table",
    "table1",
]
