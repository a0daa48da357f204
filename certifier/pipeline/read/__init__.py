"""The read model: what the dashboard, ``certifier status`` and the API show, one module per page
or resource, each answering in a handful of queries with frozen views.

``records`` holds what every page shares (commits, excuses, runs, soak progress) and how it is
read from rows; ``overview`` the front page; ``candidate`` the candidate page and list;
``run`` the run page; ``excuses`` why a candidate is not known-good, now or at a past time;
``bisection`` culprit finding; ``listings`` components, known-good history, audit log and
deliveries. The API's response schemas (``certifier/api/schemas.py``) and the dashboard's
templates are both built from these views, so they cannot tell two stories. Nothing here
writes. Time is passed in (``now``), and an open candidate's excuses and soak progress come
from the same pure :func:`certifier.domain.promotion.decide` the scheduler uses.
"""

from certifier.pipeline.read.bisection import BisectionView, CulpritView, StepView
from certifier.pipeline.read.candidate import (
    Band,
    CandidateDetail,
    CandidatePage,
    CandidateRow,
    Change,
    Point,
    SeriesView,
    candidate_detail,
    candidate_list,
    candidate_page,
)
from certifier.pipeline.read.excuses import Excuses
from certifier.pipeline.read.excuses import for_candidate as excuses_for
from certifier.pipeline.read.listings import (
    audit_actions,
    audit_log,
    component_list,
    component_page,
    deliveries,
    known_good_diff,
    known_good_history,
)
from certifier.pipeline.read.overview import (
    DEFAULT_STALE_AFTER,
    BoardEntry,
    DecisionEntry,
    KnownGoodView,
    Overview,
    TestbedEntry,
    overview,
    recent_decisions,
    stale_after,
    state_version,
    testbeds,
)
from certifier.pipeline.read.records import (
    AuditView,
    BadMark,
    CandidateSummary,
    CommitRef,
    ExcuseView,
    NamedSeries,
    RunRow,
    RunView,
    SoakProgress,
    candidate_summary,
    commits_between,
    excuse_views,
    live_excuses,
    run_row,
    run_view,
    series_title,
    soak_progress,
)
from certifier.pipeline.read.run import AbSeries, RunPage, ab_series, run_page

__all__ = [
    "DEFAULT_STALE_AFTER",
    "AbSeries",
    "AuditView",
    "BadMark",
    "Band",
    "BisectionView",
    "BoardEntry",
    "CandidateDetail",
    "CandidatePage",
    "CandidateRow",
    "CandidateSummary",
    "Change",
    "CommitRef",
    "CulpritView",
    "DecisionEntry",
    "ExcuseView",
    "Excuses",
    "KnownGoodView",
    "NamedSeries",
    "Overview",
    "Point",
    "RunPage",
    "RunRow",
    "RunView",
    "SeriesView",
    "SoakProgress",
    "StepView",
    "TestbedEntry",
    "ab_series",
    "audit_actions",
    "audit_log",
    "candidate_detail",
    "candidate_list",
    "candidate_page",
    "candidate_summary",
    "commits_between",
    "component_list",
    "component_page",
    "deliveries",
    "excuse_views",
    "excuses_for",
    "known_good_diff",
    "known_good_history",
    "live_excuses",
    "overview",
    "recent_decisions",
    "run_page",
    "run_row",
    "run_view",
    "series_title",
    "soak_progress",
    "stale_after",
    "state_version",
    "testbeds",
]
