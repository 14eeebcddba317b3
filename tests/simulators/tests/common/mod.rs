//! Helpers shared by the integration tests: a started simulator with one client per provider, an
//! HTTP client that never follows redirects, and the flows every test needs.
#![allow(dead_code)]

use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, Simulator,
    SimulatorConfig, SimulatorHandle,
};
use reqwest::StatusCode;
use serde_json::Value;

pub const REDIRECT: &str = "http://localhost:9999/callback";
pub const TW_ID: &str = "tw-client";
pub const TW_SECRET: &str = "tw-secret";
pub const EX_ID: &str = "ex-client";
pub const EX_SECRET: &str = "ex-secret";
pub const ACU_ID: &str = "11111111-1111-4111-8111-111111111111@Company";
pub const ACU_SECRET: &str = "acu-secret";
pub const TW_SCOPE: &str = "openid twf.user twf.organisation twf.organisationUser offline_access";

pub struct Setup {
    pub sim: SimulatorHandle,
    pub http: reqwest::Client,
}

/// A simulator in automatic consent mode with one client per provider.
pub async fn start() -> Setup {
    let mut config = SimulatorConfig::default();
    config.knobs.auto_consent = true;
    start_with(config).await
}

pub async fn start_with(config: SimulatorConfig) -> Setup {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let client = |id: &str, secret: &str| ClientRegistration {
        client_id: id.into(),
        client_secret: secret.into(),
        redirect_uris: vec![REDIRECT.into()],
    };
    sim.register_twinfield_client(client(TW_ID, TW_SECRET));
    sim.register_exact_client(client(EX_ID, EX_SECRET));
    sim.register_acumatica_client(
        "demo",
        acumatica_client(ACU_ID, AcumaticaRefreshPolicy::default()),
    )
    .unwrap();
    Setup {
        sim,
        http: http_client(),
    }
}

pub fn acumatica_client(id: &str, policy: AcumaticaRefreshPolicy) -> AcumaticaClientRegistration {
    AcumaticaClientRegistration {
        client_id: id.into(),
        client_secret: ACU_SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
        refresh_policy: policy,
        rotate_refresh_tokens: true,
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The query parameters of a redirect's `Location`.
pub fn redirect_params(response: &reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), StatusCode::FOUND, "expected a redirect");
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "redirected to {location}");
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The form that redeems `code` at a token endpoint (client authentication is added by the caller).
pub fn code_grant(code: &str) -> [(&'static str, &str); 3] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ]
}

/// Twinfield's authorization request for the registered client, with state `st`.
pub fn twinfield_authorize_params() -> [(&'static str, &'static str); 6] {
    [
        ("client_id", TW_ID),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", TW_SCOPE),
        ("state", "st"),
        ("nonce", "nn"),
    ]
}

pub fn param(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

impl Setup {
    pub fn twinfield_connect(&self, endpoint: &str) -> String {
        format!(
            "{}/auth/authentication/connect/{endpoint}",
            self.sim.twinfield_login_base()
        )
    }

    pub fn exact_url(&self, country: &str, path: &str) -> String {
        format!("{}{path}", self.sim.exact_base(country))
    }

    pub fn acumatica_url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.acumatica_instance_url("demo"))
    }

    /// `GET url`, with `token` as the bearer when there is one.
    pub async fn get(&self, url: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// `POST url` with `form` as the body.
    pub async fn post_form<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        form: &T,
    ) -> reqwest::Response {
        self.http.post(url).form(form).send().await.unwrap()
    }

    /// As [`Setup::get`], the answer's JSON body.
    pub async fn get_json(&self, url: &str, token: Option<&str>) -> Value {
        self.get(url, token).await.json().await.unwrap()
    }

    pub async fn get_authorize(&self, url: &str, params: &[(&str, &str)]) -> reqwest::Response {
        self.http.get(url).query(params).send().await.unwrap()
    }

    /// Runs the authorization request in auto mode and returns the code.
    pub async fn code(&self, url: &str, params: &[(&str, &str)]) -> String {
        let response = self.get_authorize(url, params).await;
        let pairs = redirect_params(&response);
        assert_eq!(param(&pairs, "state").as_deref(), Some("st"));
        param(&pairs, "code").unwrap_or_else(|| panic!("no code in {pairs:?}"))
    }

    pub async fn twinfield_code(&self) -> String {
        let url = self.twinfield_connect("authorize");
        self.code(&url, &twinfield_authorize_params()).await
    }

    pub async fn twinfield_token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.twinfield_connect("token"))
            .basic_auth(TW_ID, Some(TW_SECRET))
            .form(form)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    pub async fn twinfield_tokens(&self) -> Value {
        let code = self.twinfield_code().await;
        let (status, body) = self.twinfield_token(&code_grant(&code)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn twinfield_refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.twinfield_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    pub async fn exact_code(&self, country: &str) -> String {
        let url = self.exact_url(country, "/api/oauth2/auth");
        self.code(
            &url,
            &[
                ("client_id", EX_ID),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("state", "st"),
            ],
        )
        .await
    }

    pub async fn exact_token(&self, country: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        json_of(self.exact_token_response(country, form).await).await
    }

    /// The token endpoint's whole answer (headers too), the client's credentials in the body.
    pub async fn exact_token_response(
        &self,
        country: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut full = vec![("client_id", EX_ID), ("client_secret", EX_SECRET)];
        full.extend_from_slice(form);
        self.post_form(&self.exact_url(country, "/api/oauth2/token"), &full)
            .await
    }

    pub async fn exact_tokens(&self, country: &str) -> Value {
        let code = self.exact_code(country).await;
        let (status, body) = self.exact_token(country, &code_grant(&code)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn exact_refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.exact_token(
            "nl",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    pub async fn acumatica_code(&self, client_id: &str, scope: &str) -> String {
        let url = self.acumatica_url("/identity/connect/authorize");
        let params = [
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st"),
        ];
        self.code(&url, &params).await
    }

    pub async fn acumatica_token(
        &self,
        client_id: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut full = vec![("client_id", client_id), ("client_secret", ACU_SECRET)];
        full.extend_from_slice(form);
        let response = self
            .post_form(&self.acumatica_url("/identity/connect/token"), &full)
            .await;
        json_of(response).await
    }

    pub async fn acumatica_exchange(&self, client_id: &str, scope: &str) -> (StatusCode, Value) {
        let code = self.acumatica_code(client_id, scope).await;
        self.acumatica_token(client_id, &code_grant(&code)).await
    }

    pub async fn acumatica_refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> (StatusCode, Value) {
        self.acumatica_token(
            client_id,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }
}

pub async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// An OAuth error answer: `status`, with `error` set to `code`.
pub fn assert_oauth_error(answer: (StatusCode, &Value), status: StatusCode, code: &str) {
    let (got, body) = answer;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "{body}"
    );
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}
