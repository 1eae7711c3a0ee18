// Package archive exports settled days of merged series-minutes to
// object storage as Parquet, verifies them against InfluxDB and restores
// them exactly (docs/archive.md has the user's view and queries).
//
// # Layout (format version 1)
//
// One hive-style directory per UTC day under the target's prefix:
//
//	day=YYYY-MM-DD/part-00000.parquet   rows sorted by series, then minute
//	day=YYYY-MM-DD/part-00001.parquet   (a part holds at most 500,000 rows)
//	day=YYYY-MM-DD/_manifest.json       written last: the day is done
//
// Each row is one merged series-minute (Row): the seven dimensions, the
// minute as a UTC millisecond timestamp, exact counters (events, bots,
// bots by reason, votes) and money in millionths, a uniques estimate for
// people, and the sketches as binary columns with their encoding version
// (SketchEncoding), so a row can be merged again exactly. The schema is
// pinned in testdata/schema-v1.txt, the manifest in
// testdata/manifest-v1.json.
//
// # Guarantees
//
//   - Exact: a day's manifest is written only after its parts were read
//     back from the store (checksums, row counts, counters) and InfluxDB's
//     counters of the day, read again after the upload, equal the parts'.
//   - Idempotent and deterministic: the same minutes give the same bytes;
//     exporting an unchanged day writes nothing.
//   - Resumable by day: an interrupted export leaves the day without a
//     manifest, and the next export writes it anew.
//   - Late data: a day whose counters in InfluxDB differ from its manifest
//     is exported again (the scheduler re-checks DaysBack days).
//
// # Storage and sources
//
// Store is object storage (a local directory, or S3 through minio-go);
// Source and Sink are the merged minutes (InfluxDB through
// InfluxSource and InfluxSink, a thin adapter over aggregator/influx).
package archive
