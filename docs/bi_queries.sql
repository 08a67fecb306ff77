-- Example queries for BI users: paste into `duckdb -readonly data/bi.duckdb` (or any DuckDB client opened
-- read-only on the BI catalog). Every relation is described in docs/bi_marts.md.

-- 1. What did TV return last quarter, and how sure are we?
--    Each market's champion model, the last complete calendar quarter of its training window; the interval
--    comes from the posterior draws of the quarter's total (not a sum of weekly intervals).
SELECT market, period, first_week, last_week, spend, contribution_mean,
       roas_mean, roas_hdi_low, roas_hdi_high
FROM champion_channel_period_summary
WHERE channel = 'tv' AND period_type = 'quarter' AND complete
QUALIFY row_number() OVER (PARTITION BY market ORDER BY period_start DESC) = 1;

-- 2. Channel ROAS over the champion's whole window, best first, with its 94% interval and marginal ROAS.
SELECT market, channel, spend, share_mean, roas_mean, roas_hdi_low, roas_hdi_high, mroas_mean
FROM champion_channel_summary
ORDER BY market, roas_mean DESC;

-- 3. Is the serving model the newest fit? If not, why was the newest one rejected?
SELECT l.market, c.model_id AS champion, c.train_end AS champion_trained_to,
       l.model_id AS newest_fit, l.status AS newest_status, l.promotion_blocked_by
FROM latest_model_runs l LEFT JOIN champion_model_runs c USING (market);

-- 4. The latest budget recommendation: headline, then what to change per channel.
SELECT market, plan, budget, total_current, total_recommended, uplift_mean, uplift_hdi_low, uplift_hdi_high,
       prob_uplift_positive, roas_current, roas_recommended
FROM latest_plan_summary;
SELECT market, channel, current, recommended, change_pct, mroas_current, mroas_recommended, range_flag
FROM latest_recommendations
ORDER BY market, change DESC;

-- 5. Scenarios side by side.
SELECT market, scenario, status, total_recommended, uplift_mean, uplift_hdi_low, uplift_hdi_high,
       prob_uplift_positive
FROM latest_scenarios
ORDER BY market, is_base DESC, scenario;

-- 6. Where sales came from, by quarter (sums of weekly posterior means: the mean of a sum is the sum of means).
SELECT market, date_trunc('quarter', week) AS quarter, component, sum(mean) AS contribution
FROM champion_decomposition
GROUP BY ALL
ORDER BY market, quarter, component;

-- 7. TV's response curve: weekly contribution at each weekly spend level, with its interval.
SELECT market, weekly_spend, mean, hdi_low, hdi_high
FROM champion_response_curves
WHERE channel = 'tv'
ORDER BY market, weekly_spend;

-- 8. Out-of-sample accuracy: the MMM against the baselines (lower CRPS is better).
SELECT market, model, n_folds, crps, mape, coverage_94, crps_skill
FROM champion_cv_metrics
WHERE scope = 'overall'
ORDER BY market, crps;

-- 9. ROAS history of a channel across champions and refits (every fit, with its status).
SELECT r.market, r.model_id, r.status, r.train_end, s.roas_mean, s.roas_hdi_low, s.roas_hdi_high
FROM model_channel_summary s JOIN model_runs r USING (model_id)
WHERE s.channel = 'tv'
ORDER BY r.market, r.train_end;

-- 10. Tracked performance: forecast against actual, latest weeks (every champion's tracked weeks).
SELECT market, model_id, week, actual, pred_mean, pred_94_low, pred_94_high, in_94, rolling_mape
FROM performance_tracking
ORDER BY market, week DESC
LIMIT 12;

-- 11. Drift events and the refit runs they started.
SELECT market, event_id, rule, detected_week, status, resolution, dagster_run_id, run_status, summary
FROM drift_events
ORDER BY detected_at DESC;

-- 12. Allocation and predicted KPI over time (one row per optimization and channel).
SELECT market, created_at, trigger, conditions_active, channel, recommended_spend, expected_kpi
FROM optimization_history
ORDER BY market, created_at, channel;
