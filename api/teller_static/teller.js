/* Teller console: plain JavaScript, no build step, no third-party code.
 *
 * The teller's key lives in sessionStorage (this tab only, gone when it closes) and goes with
 * every /v1 call as "Authorization: Bearer <key>". Every text the page shows is taken from
 * STRINGS or from the API in the chosen language, and always set with textContent.
 */
(() => {
  "use strict";

  const KEY_STORE = "nbo.teller.key";
  const LANG_STORE = "nbo.teller.lang";
  const CHANNEL = "branch"; // the counter
  const OFFER_LIMIT = 5;
  const RESPONSE_LIMIT = 5;
  // Buttons on each offer -> outcomes the responses API stores. "Not now" is an offer shown
  // without an answer: the contact policy pauses a product shown several times unanswered.
  const OUTCOMES = [["accepted", "accepted"], ["declined", "declined"], ["notNow", "shown"]];

  const STRINGS = {
    en: {
      htmlLang: "en", pageTitle: "Teller console · Next-best offer", skip: "Skip to content",
      appName: "Next-best offer", title: "Teller console", navLabel: "Console",
      switchTo: "中文", switchToLang: "zh-Hans", signOut: "Sign out",
      signInHeading: "Sign in", keyLabel: "Teller key",
      keyHint: "Your personal key. It is kept only in this browser tab and forgotten when the " +
        "tab closes.",
      signIn: "Sign in", lookupHeading: "Find a customer", customerLabel: "Customer id",
      lookUp: "Look up", customerHeading: "Customer {id}", holdings: "Products held",
      noHoldings: "No products held.", recentResponses: "Recent responses",
      noResponses: "No responses recorded yet.", lifeStage: "Life stage", age: "Age",
      ageValue: "{n} years", income: "Annual income", segment: "Segment",
      riskGrade: "Risk grade", assessedOn: "assessed {date}", notAssessed: "not assessed",
      consent: "Profiling consent", consentYes: "Given", consentNo: "Not given",
      residency: "Residency", tenure: "Customer for", tenureValue: "{y} yr {m} mo",
      care: "Care flags", vulnerable: "Needs extra care", openComplaint: "Open complaint",
      none: "None", asOf: "Holdings as of", offersHeading: "Offers to discuss",
      talkingPoints: "Talking points", reasons: "Why this offer", risk: "Risk {grade}",
      noOffers: "No offer for this customer right now.", serviceActions: "Do this first",
      accepted: "Accepted", declined: "Declined", notNow: "Not now",
      whyNotHeading: "Why not a product?", productLabel: "Product", whyNot: "Why not?",
      whyNotTitle: "Why not {product}?", offeredAt: "{product} is offered now, at rank {rank}.",
      outcome_accepted: "accepted", outcome_declined: "declined", outcome_shown: "not now",
      source_cf: "Personalised: customers with similar holdings",
      source_cf_fold_in: "Personalised: similar holdings, updated since training",
      source_life_stage_prior: "Based on the customer's life stage",
      source_acquisition: "Personalised: likely next product",
      source_popularity: "Not personalised: the customer has not consented to profiling",
      modelInfo: "Model {model} · policy {policy}",
      // messages
      signedIn: "Signed in. Enter a customer id.", signedOut: "Signed out.",
      needKey: "Enter your teller key.", needCustomer: "Enter a customer id.",
      loading: "Looking up customer {id}…",
      shown: "Customer {id}: {n} offers.", shownOne: "Customer {id}: 1 offer.",
      shownNone: "Customer {id}: no offer right now.",
      recorded: "Recorded: {product} {outcome}. Offers refreshed.",
      unknownCustomer: "No customer with id {id}. Check the id and try again.",
      unknownProduct: "That product is not in the catalogue.",
      keyExpired: "Your teller key has expired. Ask your supervisor for a new key, then " +
        "sign in again.",
      keyRejected: "That teller key was not accepted. Check it and sign in again.",
      forbidden: "Your key may not do this. Ask your supervisor.",
      unavailable: "The offer service is unavailable. Try again in a moment; if it " +
        "persists, call the help desk.",
      badRequest: "The service refused the request: {message}",
      languageChanged: "Language: English.",
    },
    zh: {
      htmlLang: "zh-Hans", pageTitle: "柜员工作台 · 下一最佳推荐", skip: "跳到主要内容",
      appName: "下一最佳推荐", title: "柜员工作台", navLabel: "工作台",
      switchTo: "English", switchToLang: "en", signOut: "退出",
      signInHeading: "登录", keyLabel: "柜员密钥",
      keyHint: "您的个人密钥，仅保存在本浏览器标签页中，关闭标签页即清除。",
      signIn: "登录", lookupHeading: "查找客户", customerLabel: "客户编号",
      lookUp: "查询", customerHeading: "客户 {id}", holdings: "已持有产品",
      noHoldings: "暂无持有产品。", recentResponses: "近期反馈",
      noResponses: "暂无反馈记录。", lifeStage: "人生阶段", age: "年龄",
      ageValue: "{n} 岁", income: "年收入", segment: "客户层级",
      riskGrade: "风险等级", assessedOn: "测评于 {date}", notAssessed: "未测评",
      consent: "个性化分析授权", consentYes: "已授权", consentNo: "未授权",
      residency: "居民身份", tenure: "开户时长", tenureValue: "{y} 年 {m} 个月",
      care: "关照标记", vulnerable: "需特别关照", openComplaint: "有未结投诉",
      none: "无", asOf: "持仓数据日期", offersHeading: "推荐产品",
      talkingPoints: "沟通要点", reasons: "推荐理由", risk: "风险 {grade}",
      noOffers: "目前没有适合该客户的推荐。", serviceActions: "请先处理",
      accepted: "已接受", declined: "已婉拒", notNow: "暂不考虑",
      whyNotHeading: "为什么不推荐某产品？", productLabel: "产品", whyNot: "查看原因",
      whyNotTitle: "为什么不推荐{product}？", offeredAt: "{product}目前在推荐中，排名第 {rank}。",
      outcome_accepted: "已接受", outcome_declined: "已婉拒", outcome_shown: "暂不考虑",
      source_cf: "个性化：持有相似产品的客户",
      source_cf_fold_in: "个性化：相似持仓（训练后已更新）",
      source_life_stage_prior: "基于客户的人生阶段",
      source_acquisition: "个性化：最可能办理的下一个产品",
      source_popularity: "非个性化：客户未同意个性化分析",
      modelInfo: "模型 {model} · 策略 {policy}",
      signedIn: "已登录，请输入客户编号。", signedOut: "已退出。",
      needKey: "请输入柜员密钥。", needCustomer: "请输入客户编号。",
      loading: "正在查询客户 {id}…",
      shown: "客户 {id}：{n} 个推荐。", shownOne: "客户 {id}：1 个推荐。",
      shownNone: "客户 {id}：目前没有推荐。",
      recorded: "已记录：{product}，{outcome}。推荐已刷新。",
      unknownCustomer: "找不到编号为 {id} 的客户，请核对后重试。",
      unknownProduct: "产品目录中没有该产品。",
      keyExpired: "您的柜员密钥已过期，请向主管申领新密钥后重新登录。",
      keyRejected: "柜员密钥无效，请核对后重新登录。",
      forbidden: "您的密钥无权执行此操作，请联系主管。",
      unavailable: "推荐服务暂时不可用，请稍后重试；如持续出现，请联系技术支持。",
      badRequest: "服务拒绝了该请求：{message}",
      languageChanged: "语言：中文。",
    },
  };
  const VALUES = { // attribute values of the profile, by language
    en: {
      mass: "Mass", affluent: "Affluent", private: "Private banking",
      resident: "Resident", non_resident: "Non-resident",
      deposit: "Deposit", credit: "Credit", wealth: "Wealth", investment: "Investment",
      insurance: "Insurance", pension: "Pension", digital: "Digital", service: "Service",
    },
    zh: {
      mass: "大众客户", affluent: "富裕客户", private: "私人银行客户",
      resident: "居民", non_resident: "非居民",
      deposit: "存款", credit: "信贷", wealth: "理财", investment: "投资",
      insurance: "保险", pension: "养老金", digital: "数字银行", service: "服务",
    },
  };

  const $ = (id) => document.getElementById(id);
  const apiRoot = document.body.dataset.apiRoot || "";
  const state = {
    lang: sessionStorage.getItem(LANG_STORE) === "zh" ? "zh" : "en",
    customerId: null, // the customer on screen
    data: null, // {profile, offers, responses} of that customer
    products: [], // catalogue, in the current language
    seq: 0, // the latest lookup; older answers are dropped
    message: null, // {name, vars, kind}, re-rendered when the language changes
  };

  function t(name, vars = {}) {
    let text = STRINGS[state.lang][name] ?? STRINGS.en[name] ?? name;
    for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, String(v));
    return text;
  }

  const valueText = (v) => VALUES[state.lang][v] ?? String(v);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // ------------------------------------------------------------------ messages

  function showMessage(name, vars = {}, kind = "info") {
    state.message = name ? { name, vars, kind } : null;
    renderMessage();
  }

  function renderMessage() {
    const box = $("message");
    const m = state.message;
    box.className = `message ${m ? m.kind : ""}`;
    box.textContent = m ? t(m.name, m.vars) : "";
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, params = {}, options = {}) {
    const query = new URLSearchParams(params).toString();
    const headers = {
      Accept: "application/json",
      Authorization: `Bearer ${sessionStorage.getItem(KEY_STORE) || ""}`,
    };
    const init = { method: options.method || "GET", headers, cache: "no-store", credentials: "omit" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(`${apiRoot}${path}${query ? `?${query}` : ""}`, init);
    } catch (err) {
      throw new ApiError(0, "unavailable", String(err));
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null; // a proxy's HTML error page, a cut connection: handled below
    }
    if (!response.ok || body === null) {
      const code = body && typeof body.code === "string" ? body.code : "unavailable";
      const message = body && typeof body.message === "string" ? body.message : response.statusText;
      throw new ApiError(response.status, code, message);
    }
    return body;
  }

  const customerPath = (id, rest = "") => `/v1/customers/${encodeURIComponent(id)}${rest}`;

  /** Tells the teller what went wrong; a rejected or expired key goes back to sign-in. */
  function handleError(err, context = {}) {
    if (!(err instanceof ApiError)) throw err;
    if (err.status === 401) {
      signOut(err.code === "key_expired" ? "keyExpired" : "keyRejected");
    } else if (err.status === 403) {
      showMessage("forbidden", {}, "error");
    } else if (err.code === "unknown_product") {
      showMessage("unknownProduct", {}, "error");
    } else if (err.status === 404 && context.id !== undefined) {
      // unknown_customer, or an id no customer route can match (a "/" in it, say)
      clearCustomer();
      showMessage("unknownCustomer", { id: context.id }, "error");
      $("customer-id").select();
    } else if (err.status === 400) {
      showMessage("badRequest", { message: err.message }, "error");
    } else {
      showMessage("unavailable", {}, "error"); // network error, 5xx, 503, not JSON
    }
  }

  // ------------------------------------------------------------------ sign in and out

  function showConsole(signedIn) {
    $("sign-in").hidden = signedIn;
    $("console").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
  }

  async function signIn(key) {
    sessionStorage.setItem(KEY_STORE, key);
    try {
      await loadService(); // checks the key on a call every role may make
    } catch (err) {
      sessionStorage.removeItem(KEY_STORE);
      handleError(err);
      return;
    }
    $("teller-key").value = "";
    showConsole(true);
    showMessage("signedIn", {}, "success");
    $("customer-id").focus();
  }

  function signOut(reason = "signedOut") {
    sessionStorage.removeItem(KEY_STORE);
    state.seq += 1; // answers still on their way are dropped
    clearCustomer();
    $("customer-id").value = "";
    $("model-info").textContent = "";
    showConsole(false);
    showMessage(reason, {}, reason === "signedOut" ? "info" : "error");
    $("teller-key").focus();
  }

  /** The model (checks the key) and the catalogue for the why-not picker. */
  async function loadService() {
    const [model, catalogue] = await Promise.all([
      api("/v1/model"), api("/v1/products", { lang: state.lang }),
    ]);
    state.model = model;
    state.products = catalogue.products;
    renderModel();
    renderProductPicker();
  }

  // ------------------------------------------------------------------ customers

  function clearCustomer() {
    state.customerId = null;
    state.data = null;
    $("customer").hidden = true;
    $("why-not-answer").hidden = true;
  }

  async function fetchCustomer(id) {
    const lang = { lang: state.lang };
    const [profile, offers, responses] = await Promise.all([
      api(customerPath(id), lang),
      api(customerPath(id, "/offers"), { ...lang, channel: CHANNEL, limit: OFFER_LIMIT }),
      api(customerPath(id, "/responses")),
    ]);
    return { profile, offers, responses: responses.responses };
  }

  async function lookUp(id) {
    const seq = ++state.seq;
    const started = performance.now();
    showMessage("loading", { id });
    $("customer").setAttribute("aria-busy", "true");
    try {
      const data = await fetchCustomer(id);
      if (seq !== state.seq) return;
      if (state.customerId !== id) $("why-not-answer").hidden = true;
      state.customerId = id;
      state.data = data;
      renderCustomer();
      performance.measure("teller:lookup", { start: started, end: performance.now() });
      announceOffers();
    } catch (err) {
      if (seq === state.seq) handleError(err, { id });
    } finally {
      if (seq === state.seq) $("customer").removeAttribute("aria-busy");
    }
  }

  function announceOffers() {
    const n = state.data.offers.offers.length;
    const name = n === 0 ? "shownNone" : n === 1 ? "shownOne" : "shown";
    showMessage(name, { id: state.customerId, n }, "info");
  }

  async function record(offer, outcome, card) {
    const id = state.customerId;
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    try {
      await api(customerPath(id, "/responses"), {}, {
        method: "POST", body: { product_id: offer.product_id, outcome, channel: CHANNEL },
      });
      const seq = ++state.seq;
      const data = await fetchCustomer(id);
      if (seq !== state.seq) return;
      state.data = data;
      renderCustomer();
      showMessage("recorded", { product: offer.name, outcome: t(`outcome_${outcome}`) }, "success");
      $("offers-heading").focus(); // the card and its buttons may be gone
    } catch (err) {
      for (const b of card.querySelectorAll("button")) b.disabled = false;
      handleError(err, { id });
    }
  }

  async function whyNot(productId) {
    const id = state.customerId;
    const seq = state.seq;
    try {
      const answer = await api(customerPath(id, `/offers/${encodeURIComponent(productId)}/why-not`),
        { lang: state.lang, channel: CHANNEL, limit: OFFER_LIMIT });
      if (seq !== state.seq || id !== state.customerId) return;
      state.whyNot = answer;
      renderWhyNot();
    } catch (err) {
      handleError(err, { id });
    }
  }

  // ------------------------------------------------------------------ rendering

  function fact(label, value, extraClass = "") {
    return [el("dt", { text: label }), el("dd", { text: value, class: extraClass })];
  }

  function renderCustomer() {
    const { profile, offers, responses } = state.data;
    $("customer").hidden = false;
    $("profile-heading").textContent = t("customerHeading", { id: profile.customer_id });

    const rows = [fact(t("lifeStage"), profile.life_stage.name, "strong")];
    if (profile.age !== undefined) rows.push(fact(t("age"), t("ageValue", { n: profile.age })));
    if (profile.income !== undefined && profile.income !== null) {
      const money = new Intl.NumberFormat(t("htmlLang"), {
        style: "currency", currency: "CNY", maximumFractionDigits: 0,
      });
      rows.push(fact(t("income"), money.format(profile.income)));
    }
    if (profile.segment) rows.push(fact(t("segment"), valueText(profile.segment)));
    const assessed = profile.risk_assessed_on
      ? t("assessedOn", { date: profile.risk_assessed_on }) : t("notAssessed");
    rows.push(fact(t("riskGrade"), `${profile.risk_grade} (${assessed})`));
    rows.push(fact(t("consent"), profile.consent_profiling ? t("consentYes") : t("consentNo"),
      profile.consent_profiling ? "ok" : "warn"));
    if (profile.residency) rows.push(fact(t("residency"), valueText(profile.residency)));
    if (profile.tenure_months !== undefined) {
      const y = Math.floor(profile.tenure_months / 12);
      rows.push(fact(t("tenure"), t("tenureValue", { y, m: profile.tenure_months % 12 })));
    }
    const flags = [];
    if (profile.vulnerable) flags.push(t("vulnerable"));
    if (profile.open_complaint) flags.push(t("openComplaint"));
    rows.push(fact(t("care"), flags.length ? flags.join(" · ") : t("none"),
      flags.length ? "warn" : ""));
    if (profile.as_of) rows.push(fact(t("asOf"), profile.as_of));
    $("profile").replaceChildren(...rows.flat());

    const held = profile.holdings.map((h) => el("li", { text: h.name, dataset: { product: h.product_id } }));
    $("holdings").replaceChildren(...(held.length ? held : [el("li", { text: t("noHoldings"), class: "empty" })]));

    renderResponses(responses);
    renderOffers(offers);
  }

  function productName(productId) {
    const p = state.products.find((q) => q.product_id === productId);
    return p ? p.name : productId;
  }

  function renderResponses(responses) {
    const latest = [...responses].sort((a, b) => (a.recorded_at < b.recorded_at ? 1 : -1))
      .slice(0, RESPONSE_LIMIT);
    const format = new Intl.DateTimeFormat(t("htmlLang"), { dateStyle: "medium", timeStyle: "short" });
    const items = latest.map((r) => el("li", {},
      el("span", { text: productName(r.product_id) }),
      el("span", { class: `tag ${r.outcome}`, text: t(`outcome_${r.outcome}`) }),
      el("time", { datetime: r.recorded_at, text: format.format(new Date(r.recorded_at)) })));
    $("responses").replaceChildren(...(items.length ? items
      : [el("li", { text: t("noResponses"), class: "empty" })]));
  }

  function renderOffers(result) {
    $("offers-source").textContent = t(`source_${result.source}`);
    const notices = [
      ...result.service_actions.map((a) => el("li", { class: "notice action" },
        el("strong", { text: `${t("serviceActions")}: ${a.name}` }), el("p", { text: a.text }))),
      ...result.notices.map((n) => el("li", { class: "notice", text: n.text })),
    ];
    $("notices").replaceChildren(...notices);
    const cards = result.offers.map(offerCard);
    $("offers").replaceChildren(...(cards.length ? cards
      : [el("li", { class: "empty", text: t("noOffers") })]));
  }

  function offerCard(offer) {
    const headingId = `offer-${offer.product_id}`;
    const buttons = OUTCOMES.map(([label, outcome]) => {
      const b = el("button", {
        type: "button", class: `outcome ${outcome}`, "aria-describedby": headingId,
        dataset: { outcome }, text: t(label),
      });
      b.addEventListener("click", () => record(offer, outcome, card));
      return b;
    });
    const card = el("li", { class: "offer", dataset: { product: offer.product_id } },
      el("div", { class: "offer-head" },
        el("span", { class: "rank", "aria-hidden": "true", text: String(offer.rank) }),
        el("h3", { id: headingId, text: offer.name }),
        el("span", { class: "meta", text: `${valueText(offer.category)} · ${t("risk", { grade: offer.risk_grade })}` })),
      el("div", { class: "offer-body" },
        el("div", {},
          el("h4", { text: t("talkingPoints") }),
          el("ul", { class: "talking-points" },
            ...offer.talking_points.map((p) => el("li", { text: p })))),
        el("div", {},
          el("h4", { text: t("reasons") }),
          el("ul", { class: "reasons" },
            ...offer.reasons.map((r) => el("li", { text: r.text, dataset: { code: r.code } }))))),
      el("div", { class: "offer-actions", role: "group", "aria-labelledby": headingId }, ...buttons));
    return card;
  }

  function renderProductPicker() {
    const select = $("why-not-product");
    const chosen = select.value;
    select.replaceChildren(...state.products.map((p) => el("option", { value: p.product_id, text: p.name })));
    if (chosen) select.value = chosen;
  }

  function renderWhyNot() {
    const answer = state.whyNot;
    const box = $("why-not-answer");
    const items = answer.offered
      ? [el("li", { text: t("offeredAt", { product: answer.name, rank: answer.rank }) })]
      : answer.rules.map((r) => el("li", { text: r.text, dataset: { code: r.code } }));
    box.replaceChildren(el("h3", { text: t("whyNotTitle", { product: answer.name }) }),
      el("ul", { class: "reasons" }, ...items));
    box.hidden = false;
  }

  function renderModel() {
    const m = state.model;
    $("model-info").textContent = m ? t("modelInfo", { model: m.version, policy: m.policy_version }) : "";
  }

  function applyLanguage() {
    document.documentElement.lang = t("htmlLang");
    document.title = t("pageTitle");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-aria]")) {
      node.setAttribute("aria-label", t(node.dataset.i18nAria));
    }
    const toggle = $("lang-switch");
    toggle.textContent = t("switchTo");
    toggle.lang = t("switchToLang");
    renderModel();
    renderMessage();
  }

  /** Switch language: static text at once, then everything from the API again in it. */
  async function switchLanguage() {
    state.lang = state.lang === "en" ? "zh" : "en";
    sessionStorage.setItem(LANG_STORE, state.lang);
    applyLanguage();
    if (!sessionStorage.getItem(KEY_STORE)) return;
    try {
      await loadService();
      if (state.customerId) await lookUp(state.customerId);
      if (state.whyNot && state.customerId === state.whyNot.customer_id
          && !$("why-not-answer").hidden) {
        await whyNot(state.whyNot.product_id);
      }
      if (!state.customerId) showMessage("languageChanged");
    } catch (err) {
      handleError(err);
    }
  }

  // ------------------------------------------------------------------ wiring

  function requireValue(input, messageName) {
    const value = input.value.trim();
    input.setAttribute("aria-invalid", value ? "false" : "true");
    if (!value) {
      showMessage(messageName, {}, "error");
      input.focus();
    }
    return value;
  }

  function init() {
    applyLanguage();
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = requireValue($("teller-key"), "needKey");
      if (key) signIn(key);
    });
    $("lookup-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = requireValue($("customer-id"), "needCustomer");
      if (id) lookUp(id);
    });
    $("why-not-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if ($("why-not-product").value && state.customerId) whyNot($("why-not-product").value);
    });
    $("lang-switch").addEventListener("click", switchLanguage);
    $("sign-out").addEventListener("click", () => signOut());

    const signedIn = Boolean(sessionStorage.getItem(KEY_STORE));
    showConsole(signedIn);
    if (signedIn) {
      loadService().catch(handleError); // a key that expired meanwhile goes back to sign-in
      $("customer-id").focus();
    } else {
      $("teller-key").focus();
    }
    performance.mark("teller:ready");
  }

  init();
})();
