#include "server/proto_convert.h"

#include "absl/strings/str_cat.h"

namespace engram::server {
namespace {

absl::StatusOr<MetadataValue> ValueFromProto(const v1::MetadataValue& value,
                                             absl::string_view where) {
  switch (value.kind_case()) {
    case v1::MetadataValue::kStringValue:
      return MetadataValue(value.string_value());
    case v1::MetadataValue::kIntValue:
      return MetadataValue(value.int_value());
    case v1::MetadataValue::kDoubleValue:
      return MetadataValue(value.double_value());
    case v1::MetadataValue::kBoolValue:
      return MetadataValue(value.bool_value());
    case v1::MetadataValue::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(where, " has no value set"));
}

void ValueToProto(const MetadataValue& value, v1::MetadataValue* out) {
  std::visit(
      [out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) out->set_string_value(v);
        if constexpr (std::is_same_v<T, int64_t>) out->set_int_value(v);
        if constexpr (std::is_same_v<T, double>) out->set_double_value(v);
        if constexpr (std::is_same_v<T, bool>) out->set_bool_value(v);
      },
      value);
}

}  // namespace

absl::StatusOr<Metric> MetricFromProto(v1::Metric metric) {
  switch (metric) {
    case v1::METRIC_COSINE:
      return Metric::kCosine;
    case v1::METRIC_INNER_PRODUCT:
      return Metric::kInnerProduct;
    case v1::METRIC_L2:
      return Metric::kL2;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("metric ", static_cast<int>(metric),
                   " is not one of METRIC_COSINE, METRIC_INNER_PRODUCT, METRIC_L2"));
}

v1::Metric MetricToProto(Metric metric) {
  switch (metric) {
    case Metric::kCosine:
      return v1::METRIC_COSINE;
    case Metric::kInnerProduct:
      return v1::METRIC_INNER_PRODUCT;
    case Metric::kL2:
      return v1::METRIC_L2;
  }
  return v1::METRIC_UNSPECIFIED;
}

void SpaceToProto(const SpaceInfo& space, v1::Space* out) {
  out->set_name(space.name);
  out->set_dimension(space.dimension);
  out->set_metric(MetricToProto(space.metric));
  out->set_created_at_us(space.created_at_us);
  out->set_episode_count(space.episode_count);
  v1::TextIndex* text = out->mutable_text();
  text->set_stem_language(space.text.stem_language);
  text->set_bm25_k1(space.text.bm25_k1);
  text->set_bm25_b(space.text.bm25_b);
  text->set_tokenizer(space.text.tokenizer_version);
  out->set_embedder(space.embedder);
}

TextSettings TextSettingsFromProto(const v1::TextIndex& in) {
  TextSettings text;
  text.stem_language = in.stem_language();
  if (in.has_bm25_k1()) text.bm25_k1 = in.bm25_k1();
  if (in.has_bm25_b()) text.bm25_b = in.bm25_b();
  return text;
}

absl::StatusOr<Episode> EpisodeFromProto(const v1::Episode& in) {
  Episode e;
  e.id = in.id();
  e.agent_id = in.agent_id();
  e.session_id = in.session_id();
  e.kind = in.kind();
  e.text = in.text();
  e.embedding.assign(in.embedding().begin(), in.embedding().end());
  for (const auto& [key, value] : in.metadata()) {
    absl::StatusOr<MetadataValue> v = ValueFromProto(value, absl::StrCat("metadata '", key, "'"));
    if (!v.ok()) return v.status();
    e.metadata.emplace(key, *std::move(v));
  }
  e.event_time_us = in.event_time_us();
  e.expires_at_us = in.expires_at_us();
  e.importance = in.importance();
  e.links.assign(in.links().begin(), in.links().end());
  e.version = in.version();
  e.created_at_us = in.created_at_us();
  e.updated_at_us = in.updated_at_us();
  e.key = in.key();
  return e;
}

void EpisodeToProto(const Episode& e, bool include_embedding, v1::Episode* out) {
  out->set_id(e.id);
  out->set_agent_id(e.agent_id);
  out->set_session_id(e.session_id);
  out->set_kind(e.kind);
  out->set_text(e.text);
  if (include_embedding) out->mutable_embedding()->Add(e.embedding.begin(), e.embedding.end());
  for (const auto& [key, value] : e.metadata) ValueToProto(value, &(*out->mutable_metadata())[key]);
  out->set_event_time_us(e.event_time_us);
  out->set_expires_at_us(e.expires_at_us);
  out->set_importance(e.importance);
  out->mutable_links()->Add(e.links.begin(), e.links.end());
  out->set_version(e.version);
  out->set_created_at_us(e.created_at_us);
  out->set_updated_at_us(e.updated_at_us);
  out->set_key(e.key);
}

void SearchResultToProto(const retrieval::SearchResult& result, bool include_embedding,
                         v1::SearchResponse* out) {
  out->mutable_hits()->Reserve(static_cast<int>(result.hits.size()));
  for (const retrieval::SearchHit& hit : result.hits) {
    v1::SearchHit* wire = out->add_hits();
    wire->set_score(hit.score);
    EpisodeToProto(hit.episode, include_embedding, wire->mutable_episode());
    for (const retrieval::SourceRank& source : hit.sources) {
      v1::SourceRank* rank = wire->add_sources();
      rank->set_source(source.source);
      rank->set_rank(source.rank);
      rank->set_score(source.score);
    }
  }
  for (const std::string& term : result.query_terms) out->add_query_terms(term);
  out->set_route(retrieval::RouteName(result.route));
  out->set_scanned(result.candidates);
  for (const retrieval::StageReport& stage : result.stages) {
    v1::SearchStage* wire = out->add_stages();
    wire->set_name(stage.name);
    wire->set_candidates(stage.candidates);
    wire->set_micros(absl::ToInt64Microseconds(stage.time));
    wire->set_kept(stage.kept);
    wire->set_budget_micros(absl::ToInt64Microseconds(stage.budget));
    wire->set_note(stage.note);
  }
  out->set_policy(retrieval::RoutePolicyName(result.policy));
  if (result.gate.evaluated) {
    v1::GateDecision* gate = out->mutable_gate();
    gate->set_escalated(result.gate.escalated);
    gate->set_score(result.gate.score);
    gate->set_threshold(result.gate.threshold);
    gate->set_reason(result.gate.reason);
    gate->set_micros(absl::ToInt64Microseconds(result.gate.time));
    for (const retrieval::GateSignal& signal : result.gate.signals) {
      v1::GateSignal* wire = gate->add_signals();
      wire->set_name(signal.name);
      wire->set_value(signal.value);
      wire->set_weight(signal.weight);
      wire->set_contribution(signal.contribution);
    }
  }
}

absl::StatusOr<EpisodeFilter> FilterFromProto(const v1::EpisodeFilter& in) {
  EpisodeFilter filter;
  filter.agent_id = in.agent_id();
  filter.session_id = in.session_id();
  filter.kinds.assign(in.kinds().begin(), in.kinds().end());
  if (in.has_event_time_from_us()) filter.event_time_from_us = in.event_time_from_us();
  if (in.has_event_time_to_us()) filter.event_time_to_us = in.event_time_to_us();
  for (int i = 0; i < in.metadata_size(); ++i) {
    const v1::MetadataPredicate& p = in.metadata(i);
    MetadataPredicate predicate;
    predicate.key = p.key();
    switch (p.op()) {
      case v1::MetadataPredicate::EQ:
        predicate.op = MetadataPredicate::Op::kEq;
        break;
      case v1::MetadataPredicate::NE:
        predicate.op = MetadataPredicate::Op::kNe;
        break;
      case v1::MetadataPredicate::LT:
        predicate.op = MetadataPredicate::Op::kLt;
        break;
      case v1::MetadataPredicate::LE:
        predicate.op = MetadataPredicate::Op::kLe;
        break;
      case v1::MetadataPredicate::GT:
        predicate.op = MetadataPredicate::Op::kGt;
        break;
      case v1::MetadataPredicate::GE:
        predicate.op = MetadataPredicate::Op::kGe;
        break;
      case v1::MetadataPredicate::EXISTS:
        predicate.op = MetadataPredicate::Op::kExists;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "filter.metadata[", i, "] (key '", p.key(), "'): op ", static_cast<int>(p.op()),
            " is not one of EQ, NE, LT, LE, GT, GE, EXISTS"));
    }
    if (p.has_value() && p.value().kind_case() != v1::MetadataValue::KIND_NOT_SET) {
      absl::StatusOr<MetadataValue> value =
          ValueFromProto(p.value(), absl::StrCat("filter.metadata[", i, "].value"));
      if (!value.ok()) return value.status();
      predicate.value = *std::move(value);
    }
    filter.metadata.push_back(std::move(predicate));
  }
  return filter;
}

absl::StatusOr<std::vector<UpdatableField>> UpdateMaskFromProto(
    const google::protobuf::RepeatedPtrField<std::string>& paths) {
  static const std::pair<const char*, UpdatableField> kPaths[] = {
      {"session_id", UpdatableField::kSessionId},
      {"kind", UpdatableField::kKind},
      {"text", UpdatableField::kText},
      {"embedding", UpdatableField::kEmbedding},
      {"metadata", UpdatableField::kMetadata},
      {"event_time_us", UpdatableField::kEventTime},
      {"expires_at_us", UpdatableField::kExpiresAt},
      {"importance", UpdatableField::kImportance},
      {"links", UpdatableField::kLinks}};
  std::vector<UpdatableField> fields;
  for (const std::string& path : paths) {
    auto it = std::find_if(std::begin(kPaths), std::end(kPaths),
                           [&path](const auto& entry) { return path == entry.first; });
    if (it == std::end(kPaths)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update_mask path '", path,
          "' is not updatable; use session_id, kind, text, embedding, metadata, event_time_us, "
          "expires_at_us, importance or links"));
    }
    fields.push_back(it->second);
  }
  return fields;
}

}  // namespace engram::server
