"""Open-Assistant conversation trees: read, check, flatten into ranked paths and pairs.

The public API, in the order data flows:

    TreeReader / read_trees      read an export (nested or flat, gz or not) into DiGraph trees
    write_trees                  write trees back in either export format
    Selection                    tree and message filters shared by all strategies
    tree_paths, PathSampler      ranked dialog paths (all, best, top-k, sample)
    tree_pairs, ranked_prefixes  ranked sibling pairs for preference training
    compat_sft_threads, compat_rm_prefixes   Open-Assistant's own selection, exactly
    export_paths, export_pairs   whole jobs: read, select, write records (JSONL, parquet, datasets)
"""

from convdistill.conversation_trees.exports import (
    ExportSummary,
    ReadOptions,
    export_pairs,
    export_paths,
    sample_paths,
)
from convdistill.conversation_trees.ingest_report import IngestReport, InputError, Reject
from convdistill.conversation_trees.oasst_compat import compat_rm_prefixes, compat_sft_threads
from convdistill.conversation_trees.pairs import (
    PreferencePair,
    RankedPrefix,
    ranked_prefixes,
    tree_pairs,
)
from convdistill.conversation_trees.paths import DialogPath, PathSampler, tree_paths
from convdistill.conversation_trees.readers import TreeReader, read_trees
from convdistill.conversation_trees.records import pair_record, path_record
from convdistill.conversation_trees.scoring import ScoreWeights
from convdistill.conversation_trees.selection import Selection
from convdistill.conversation_trees.splits import split_of
from convdistill.conversation_trees.stats import TreeStats, collect_stats
from convdistill.conversation_trees.tree_graph import TreeError
from convdistill.conversation_trees.writers import write_trees

__all__ = [
    "DialogPath",
    "ExportSummary",
    "IngestReport",
    "InputError",
    "PathSampler",
    "PreferencePair",
    "RankedPrefix",
    "ReadOptions",
    "Reject",
    "ScoreWeights",
    "Selection",
    "TreeError",
    "TreeReader",
    "TreeStats",
    "collect_stats",
    "compat_rm_prefixes",
    "compat_sft_threads",
    "export_pairs",
    "export_paths",
    "pair_record",
    "path_record",
    "ranked_prefixes",
    "read_trees",
    "sample_paths",
    "split_of",
    "tree_pairs",
    "tree_paths",
    "write_trees",
]
