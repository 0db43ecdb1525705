-- History pages filtered the ways the UI and the API filter them, newest first without sorting and without
-- scanning rows that do not match: by pipeline (a pipeline's "Execution History", the run dialog's executions
-- to reuse from), by status, and by both.
CREATE INDEX executions_by_project_pipeline ON executions (org, project, pipeline, created_at DESC, id DESC);
CREATE INDEX executions_by_project_status ON executions (org, project, status, created_at DESC, id DESC);
CREATE INDEX executions_by_project_pipeline_status
  ON executions (org, project, pipeline, status, created_at DESC, id DESC);
