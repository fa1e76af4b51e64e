-- +goose Up
-- An assignment can name maps its hosts export as Prometheus metrics
-- (bpfarm assign NAME --export MAP[:counter|gauge|histogram]): []api.Export.
-- How each host exports them (or why it cannot) is part of its report
-- (hosts.state, []api.HostProgram with exports).
ALTER TABLE assignments ADD COLUMN exports TEXT NOT NULL DEFAULT '[]';

-- +goose Down
ALTER TABLE assignments DROP COLUMN exports;
