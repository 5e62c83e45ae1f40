"""gold.samples' fields, each with the role it plays in training, and the model inputs by role.

The table registry builds gold.samples' columns from SAMPLE_FIELDS; models and the trainer's
encoder read the lists below, so neither imports the other (nor Spark) to know which columns
exist and which embedding table each one indexes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SampleField:
    """A gold.samples column and what training does with it.

    roles: key, context (kept, not a model input), label, categorical (an embedding input),
    sequence (a behaviour sequence sharing `vocabulary`'s table), gaps (the sequence's time
    gaps), count (a temporal count), dense (a log-scaled activity count), group (ChoirRec's
    group channel; `vocabulary` names the table it shares), group_sequence, partition."""

    name: str
    type: str
    role: str
    vocabulary: str | None = None

    @property
    def table(self) -> str:
        """The embedding table (vocabulary) this column indexes."""
        return self.vocabulary or self.name


_CAT, _SEQ, _GROUP = "categorical", "sequence", "group"
SAMPLE_FIELDS: tuple[SampleField, ...] = (
    SampleField("event_id", "string", "key"),
    SampleField("request_id", "string", "context"),
    SampleField("event_time", "timestamp", "context"),
    SampleField("click", "int", "label"),
    SampleField("conversion", "int", "label"),
    # Categorical inputs, in the order of the trainer's categorical array.
    SampleField("user_id", "string", _CAT),
    SampleField("item_id", "string", _CAT),
    SampleField("item_category", "string", _CAT),
    SampleField("item_top_category", "string", _CAT),
    SampleField("item_brand", "string", _CAT),
    SampleField("price_bucket", "string", _CAT),
    SampleField("views_level", "int", _CAT),
    SampleField("likes_level", "int", _CAT),
    SampleField("user_category_ctr_level", "int", _CAT),
    SampleField("user_category_impressions_level", "int", _CAT),
    SampleField("age_band", "string", _CAT),
    SampleField("gender", "string", _CAT),
    SampleField("city_tier", "string", _CAT),
    SampleField("device", "string", _CAT),
    SampleField("surface", "string", _CAT),
    SampleField("position", "int", _CAT),
    SampleField("hour", "int", _CAT),
    SampleField("weekday", "int", _CAT),
    SampleField("activity_bucket", "string", _CAT),
    # The behaviour sequence (most recent last) and its gaps to the impression.
    SampleField("hist_item_ids", "array<string>", _SEQ, "item_id"),
    SampleField("hist_categories", "array<string>", _SEQ, "item_category"),
    SampleField("hist_gap_seconds", "array<double>", "gaps"),
    SampleField("hist_len", "int", "count"),
    SampleField("seconds_since_last_click", "double", "count"),
    SampleField("clicks_1h", "int", "count"),
    SampleField("clicks_1d", "int", "count"),
    # Activity known before the sample: ChoirRec's reliability inputs.
    SampleField("clicks_7d", "bigint", "dense"),
    SampleField("clicks_30d", "bigint", "dense"),
    SampleField("conversions_30d", "bigint", "dense"),
    # ChoirRec's group channel: codes with their own tables, voted attributes sharing the
    # user's, the group's behaviour sequences.
    SampleField("group_c1", "string", _GROUP),
    SampleField("group_c2", "string", _GROUP),
    SampleField("group_c3", "string", _GROUP),
    SampleField("group_id", "string", _GROUP),
    SampleField("group_age_band", "string", _GROUP, "age_band"),
    SampleField("group_gender", "string", _GROUP, "gender"),
    SampleField("group_city_tier", "string", _GROUP, "city_tier"),
    SampleField("group_hist_categories", "array<string>", "group_sequence", "item_category"),
    SampleField(
        "group_hist_top_categories", "array<string>", "group_sequence", "item_top_category"
    ),
    SampleField("dt", "string", "partition"),
)


def sample_fields(role: str) -> tuple[SampleField, ...]:
    return tuple(f for f in SAMPLE_FIELDS if f.role == role)


CATEGORICAL_FIELDS: tuple[str, ...] = tuple(f.name for f in sample_fields("categorical"))
# Sequence field -> the target field whose vocabulary (and embedding table) it shares.
SEQUENCE_FIELDS: dict[str, str] = {f.name: f.table for f in sample_fields("sequence")}
# ChoirRec's group channel (silver.user_groups + silver.group_priors, as of the day before):
# hierarchical codes with their own vocabularies, voted attributes sharing the user's.
GROUP_FIELDS: dict[str, str] = {f.name: f.table for f in sample_fields("group")}
GROUP_SEQUENCE_FIELDS: dict[str, str] = {f.name: f.table for f in sample_fields("group_sequence")}
# Activity counts known before the sample, log1p-scaled: the reliability inputs of ChoirRec.
DENSE_FIELDS: tuple[str, ...] = tuple(f.name for f in sample_fields("dense"))
