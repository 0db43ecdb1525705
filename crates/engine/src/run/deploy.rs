//! What a Deployment stage deploys: its targets when it deploys several services or to several
//! environments (`Run::deploy_targets`), and the service, environment and infrastructure values of one
//! target (`Run::deployment`, following `useFromStage`), as `<+service.*>`, `<+env.*>` and `<+infra.*>` read them.

use super::*;

impl<'p> Run<'p> {
    /// What a Deployment stage deploys when it is more than one service to one infrastructure: every service of
    /// `services` to every infrastructure definition of every environment of `environments` (or of its one
    /// `environment`, which may list several), and whether they run side by side. None for one target.
    pub(super) fn deploy_targets(
        &self,
        s: &Stage,
        scope: &Scope,
    ) -> Result<Option<(Vec<looping::Target>, bool)>, NodeError> {
        let spec = &s.spec;
        if s.stage_type != StageType::Deployment {
            return Ok(None);
        }
        let local = BTreeMap::new();
        let render = |v: &spec::Str| self.with_ctx(&local, scope, |c| c.render(v));
        let single_env = spec.environment.as_ref().filter(|e| e.use_from_stage.is_none());
        let many_infras = single_env.is_some_and(|e| {
            e.infrastructure_definitions.len() > 1
                || (e.deploy_to_all == Some(true) && e.infrastructure_definitions.is_empty())
        });
        if spec.services.is_none() && spec.environments.is_none() && !many_infras {
            return Ok(None);
        }
        let mut services = Vec::new();
        // `services: {useFromStage}`: the services of that stage (following its own propagation).
        let mut from = spec;
        for _ in 0..self.pipeline.all_stages().len() {
            let Some(u) = from.services.as_ref().and_then(|m| m.use_from_stage.as_ref()) else { break };
            let Some(src) = self.pipeline.all_stages().into_iter().find(|x| x.identifier.value == u.stage.value) else {
                return Err(NodeError::Targets(format!(
                    "stage `{}` propagates its services from stage `{}`, which does not exist",
                    s.identifier.value, u.stage.value
                )));
            };
            from = &src.spec;
        }
        let refs: Vec<&spec::Str> = match &from.services {
            Some(m) => m.values.iter().filter_map(|v| v.service_ref.as_ref()).collect(),
            None => from.service.as_ref().and_then(|c| c.service_ref.as_ref()).into_iter().collect(),
        };
        for r in refs {
            services.push(render(r)?);
        }
        if spec
            .services
            .as_ref()
            .is_some_and(|m| m.use_from_stage.is_none() && m.values.iter().any(|v| v.service_ref.is_none()))
        {
            return Err(NodeError::Targets("a service of `services` propagates from another stage (`useFromStage`); list the services by `serviceRef`, or propagate them all with `services: {useFromStage: {stage: …}}`".into()));
        }
        let env_cfgs: Vec<&spec::EnvironmentConfig> = match &spec.environments {
            Some(m) => m.values.iter().collect(),
            None => single_env.into_iter().collect(),
        };
        let mut envs = Vec::new();
        for e in env_cfgs {
            let Some(r) = &e.environment_ref else {
                return Err(NodeError::Targets("an environment of `environments` propagates from another stage (`useFromStage`); list the environments by `environmentRef`".into()));
            };
            let env = render(r)?;
            let mut infras: Vec<String> =
                e.infrastructure_definitions.iter().map(|d| render(&d.identifier)).collect::<Result<_, _>>()?;
            if infras.is_empty() && e.deploy_to_all == Some(true) {
                infras = self
                    .entities
                    .infrastructures
                    .values()
                    .filter(|i| i.environment_ref.value == env)
                    .map(|i| i.meta.identifier.value.clone())
                    .collect();
            }
            if infras.is_empty() {
                return Err(NodeError::Targets(format!(
                    "environment `{env}` has no infrastructure definition to deploy to: list them under `infrastructureDefinitions`, or set `deployToAll: true` with infrastructure definitions of `environmentRef: {env}` in the entities"
                )));
            }
            envs.push((env, infras));
        }
        let parallel = spec.services.as_ref().is_none_or(|m| m.parallel)
            && spec.environments.as_ref().is_none_or(|m| m.parallel)
            && (spec.services.is_some() || spec.environments.is_some());
        Ok(Some((looping::targets(&services, &envs), parallel)))
    }

    /// Resolve a Deployment stage's service, environment and infrastructure (following `useFromStage`) into
    /// `local` and the stage's entry in the tree.
    pub(super) fn deployment(
        &self,
        s: &Stage,
        iid: &str,
        local: &mut BTreeMap<String, Value>,
        scope: &Scope,
        target: Option<&looping::Target>,
    ) -> Result<(), NodeError> {
        self.service_values(&s.spec, local, scope, target.and_then(|t| t.service.clone()))?;
        self.environment_values(&s.spec, local, scope, target.and_then(|t| t.env.clone()))?;
        for key in ["service", "serviceVariables", "env", "infra"] {
            if let Some(v) = local.get(key) {
                self.set_tree(&["pipeline", "stages", iid, key], v.clone());
            }
        }
        Ok(())
    }

    /// What stage `stage` resolved as `key` (`service`, `env`, …): what `useFromStage` propagates.
    fn propagated(&self, stage: &str, key: &'static str) -> Result<Value, NodeError> {
        let t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        tree::get(&t, &["pipeline".into(), "stages".into(), stage.into(), key.into()])
            .cloned()
            .ok_or_else(|| NodeError::NotPropagated { stage: stage.to_string(), key })
    }

    /// `<+service.*>` and `<+serviceVariables.*>`: the target's service, the stage's own, or the one
    /// propagated from another stage.
    fn service_values(
        &self,
        spec: &spec::StageSpec,
        local: &mut BTreeMap<String, Value>,
        scope: &Scope,
        target_service: Option<String>,
    ) -> Result<(), NodeError> {
        let service_from = spec
            .service
            .as_ref()
            .and_then(|c| c.use_from_stage.as_ref())
            .or(spec.service_config.as_ref().and_then(|c| c.use_from_stage.as_ref()));
        let service_ref = spec
            .service
            .as_ref()
            .and_then(|c| c.service_ref.as_ref())
            .or(spec.service_config.as_ref().and_then(|c| c.reference.as_ref()));
        let service_id = match (target_service, service_ref) {
            (Some(id), _) => Some(id),
            (None, Some(r)) if service_from.is_none() => Some(self.with_ctx(local, scope, |c| c.render(r))?),
            _ => None,
        };
        if let (Some(u), None) = (service_from, &service_id) {
            local.insert("service".into(), self.propagated(&u.stage, "service")?);
            local.insert("serviceVariables".into(), self.propagated(&u.stage, "serviceVariables")?);
            return Ok(());
        }
        let Some(id) = service_id else { return Ok(()) };
        let svc = self
            .entities
            .services
            .get(&id)
            .ok_or_else(|| NodeError::UndefinedEntity { kind: "service", id: id.clone() })?;
        local.insert(
            "service".into(),
            Value::Map(BTreeMap::from([
                ("name".to_string(), Value::String(svc.meta.name.value.clone())),
                ("identifier".to_string(), Value::String(svc.meta.identifier.value.clone())),
                (
                    "type".to_string(),
                    Value::String(svc.deployment_type.as_ref().map(|t| t.value.clone()).unwrap_or_default()),
                ),
            ])),
        );
        let mut vars = BTreeMap::new();
        for v in &svc.variables {
            vars.insert(
                v.name.value.clone(),
                self.variable(v, local, scope).map_err(|e| e.within("service variable", &v.name.value))?,
            );
        }
        local.insert("serviceVariables".into(), Value::Map(vars));
        Ok(())
    }

    /// `<+env.*>` and `<+infra.*>`: the target's environment and infrastructure, the stage's own, or those
    /// propagated from another stage.
    fn environment_values(
        &self,
        spec: &spec::StageSpec,
        local: &mut BTreeMap<String, Value>,
        scope: &Scope,
        target_env: Option<(String, String)>,
    ) -> Result<(), NodeError> {
        let env_from = spec
            .environment
            .as_ref()
            .and_then(|c| c.use_from_stage.as_ref())
            .or(spec.infrastructure.as_ref().and_then(|c| c.use_from_stage.as_ref()));
        if let (Some(u), None) = (env_from, &target_env) {
            local.insert("env".into(), self.propagated(&u.stage, "env")?);
            local.insert("infra".into(), self.propagated(&u.stage, "infra")?);
            return Ok(());
        }
        let (env_ref, infra_id) = match (&target_env, spec.environment.as_ref()) {
            (Some((e, i)), _) => (e.clone(), Some(i.clone())),
            (None, Some(env_cfg)) => {
                let e = env_cfg
                    .environment_ref
                    .as_ref()
                    .map(|r| self.with_ctx(local, scope, |c| c.render(r)))
                    .transpose()?
                    .unwrap_or_default();
                let i = env_cfg
                    .infrastructure_definitions
                    .first()
                    .map(|d| self.with_ctx(local, scope, |c| c.render(&d.identifier)))
                    .transpose()?;
                (e, i)
            }
            (None, None) => return Ok(()),
        };
        let env = self
            .entities
            .environments
            .get(&env_ref)
            .ok_or_else(|| NodeError::UndefinedEntity { kind: "environment", id: env_ref.clone() })?;
        let mut vars = BTreeMap::new();
        for v in &env.variables {
            vars.insert(
                v.name.value.clone(),
                self.variable(v, local, scope).map_err(|e| e.within("environment variable", &v.name.value))?,
            );
        }
        local.insert(
            "env".into(),
            Value::Map(BTreeMap::from([
                ("name".to_string(), Value::String(env.meta.name.value.clone())),
                ("identifier".to_string(), Value::String(env.meta.identifier.value.clone())),
                ("type".to_string(), Value::String(format!("{:?}", env.env_type))),
                ("variables".to_string(), Value::Map(vars)),
            ])),
        );
        match infra_id {
            Some(infra_id) => self.infrastructure_values(&infra_id, local, scope),
            None => Ok(()),
        }
    }

    /// `<+infra.*>` of infrastructure definition `infra_id`, with its `INFRA_KEY` for this execution.
    fn infrastructure_values(
        &self,
        infra_id: &str,
        local: &mut BTreeMap<String, Value>,
        scope: &Scope,
    ) -> Result<(), NodeError> {
        let infra = self.entities.infrastructures.get(infra_id).ok_or_else(|| NodeError::UndefinedEntity {
            kind: "infrastructure definition",
            id: infra_id.to_string(),
        })?;
        let key = infra_key(&self.exec.id, &infra.meta.identifier.value);
        // Harness's short form, the default release name in the infrastructure definitions it generates.
        let short: String = key.chars().take(6).collect();
        let mut with_key = local.clone();
        with_key.insert("INFRA_KEY".into(), Value::String(key.clone()));
        with_key.insert("INFRA_KEY_SHORT_ID".into(), Value::String(short.clone()));
        let mut m = BTreeMap::new();
        for (k, v) in &infra.spec {
            let val = match v {
                serde_json::Value::String(s) => Value::String(self.with_ctx(&with_key, scope, |c| c.render(s))?),
                other => Value::from(other.clone()),
            };
            m.insert(k.clone(), val);
        }
        m.insert("name".into(), Value::String(infra.meta.name.value.clone()));
        m.insert("identifier".into(), Value::String(infra.meta.identifier.value.clone()));
        m.insert("infraKey".into(), Value::String(key.clone()));
        local.insert("infra".into(), Value::Map(m));
        local.insert("INFRA_KEY".into(), Value::String(key));
        local.insert("INFRA_KEY_SHORT_ID".into(), Value::String(short));
        Ok(())
    }
}

pub(super) fn infra_key(exec: &str, infra: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (exec, infra).hash(&mut h);
    format!("{:x}", h.finish())[..8].to_string()
}
