// Reads local copies of a Tally archive with DuckDB and prints, as JSON,
// each (day, campaign)'s totals: the end-to-end test compares them with
// the API. Usage: node totals.mjs DIR
import { DuckDBInstance } from '@duckdb/node-api';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node totals.mjs DIR');
  process.exit(2);
}
const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
// Totals are summed as integers (money in millionths), so they are exact.
const sql = `
  SELECT CAST(day AS VARCHAR)                                     AS day,
         campaign,
         CAST(count(*) AS BIGINT)                                 AS rows,
         CAST(coalesce(sum(events) FILTER (WHERE type = 'impression'), 0) AS BIGINT) AS impressions,
         CAST(coalesce(sum(events) FILTER (WHERE type = 'click'), 0) AS BIGINT)      AS clicks,
         CAST(coalesce(sum(events) FILTER (WHERE type = 'conversion'), 0) AS BIGINT) AS conversions,
         CAST(coalesce(sum(events) FILTER (WHERE type = 'pageview'), 0) AS BIGINT)   AS pageviews,
         CAST(sum(events) AS BIGINT)                              AS events,
         CAST(sum(value_micros) AS BIGINT)                        AS value_micros,
         CAST(sum(cost_micros) AS BIGINT)                         AS cost_micros,
         CAST(sum(bots) AS BIGINT)                                AS bots
  FROM read_parquet('${dir.replaceAll("'", "''")}/day=*/*.parquet', hive_partitioning = true)
  GROUP BY ALL
  ORDER BY ALL`;
const reader = await conn.runAndReadAll(sql);
// BIGINTs print as JSON strings (getRowObjectsJson), read as exact int64.
console.log(JSON.stringify(reader.getRowObjectsJson()));
