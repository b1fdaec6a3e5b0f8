// Manage: forms for what the admin API does. Create a key (its plaintext is shown
// once), add a channel, set a price (create, or replace an existing store
// price), top up a key's quota (its quota raised by an amount). Channels are
// enabled and disabled from the Overview's channel table.
"use strict";

FG.manage = (function () {
  const { $, el, api, usd } = FG;

  function result(form, text, ok) {
    const out = form.querySelector(".result");
    out.hidden = false;
    if (typeof text === "string") {
      out.textContent = text;
      out.className = "result " + (ok ? "probe-ok" : "probe-bad");
    }
    return out;
  }

  function failed(form, e) {
    result(form, "Refused: " + e.message, false);  // the message names each field
  }

  const value = (form, name) => form.elements[name].value.trim();
  const number = (form, name) => (value(form, name) === "" ? undefined : Number(value(form, name)));

  async function createToken(form) {
    const spec = { name: value(form, "name") };
    if (value(form, "group")) spec.group = value(form, "group");
    if (number(form, "quota_usd") !== undefined) spec.quota_usd = number(form, "quota_usd");
    const made = await api("/tokens", { method: "POST", json: spec });
    const out = result(form);
    out.className = "result";
    out.querySelector(".key-name").textContent = made.name;
    out.querySelector(".new-key").textContent = made.key;
    form.elements.name.value = "";
    return made;
  }

  async function addChannel(form) {
    const spec = {
      name: value(form, "name"),
      type: value(form, "type"),
      models: value(form, "models").split(",").map((m) => m.trim()).filter(Boolean),
      priority: number(form, "priority") || 0,
      weight: number(form, "weight") === undefined ? 1 : number(form, "weight"),
    };
    if (value(form, "base_url")) spec.base_url = value(form, "base_url");
    if (value(form, "api_key")) spec.api_key = value(form, "api_key");
    const made = await api("/channels", { method: "POST", json: spec });
    form.elements.api_key.value = "";
    result(form, `Channel "${made.name}" added (${made.type}, ${made.models.join(", ")}).`, true);
    return made;
  }

  async function setPrice(form) {
    const model = value(form, "model");
    const spec = { input: number(form, "input"), output: number(form, "output") };
    const given = {};
    for (const k of ["cache_read", "cache_write"]) if (number(form, k) !== undefined) given[k] = number(form, k);
    const prices = await api("/prices");
    const existing = prices.data.find((p) => p.model === model && !p.read_only);
    let made;
    if (existing) {
      // replacing: an empty cache price goes back to its default (the input price)
      const patch = Object.assign({ cache_read: null, cache_write: null }, spec, given);
      made = await api("/prices/" + encodeURIComponent(model), { method: "PATCH", json: patch });
    } else {
      made = await api("/prices", { method: "POST", json: Object.assign({ model }, spec, given) });
    }
    result(form, `Price of "${made.model}": $${made.input} in, $${made.output} out per 1M tokens.`, true);
    return made;
  }

  // Top up: read the key's quota, raise it by the amount (an unlimited key has no
  // quota to raise). Two requests: two people topping up the same key at the same
  // moment could lose one of the amounts; the result line shows the new quota.
  async function topUp(form) {
    const name = value(form, "token");
    const add = Math.round(number(form, "amount") * 1e6);
    const t = await api("/tokens/" + encodeURIComponent(name));
    if (t.quota_micros === null || t.quota_micros < 0) {
      result(form, `"${name}" has no quota (unlimited): nothing to top up.`, false);
      return t;
    }
    const made = await api("/tokens/" + encodeURIComponent(name), { method: "PATCH", json: { quota_micros: t.quota_micros + add } });
    result(form, `Quota of "${name}": ${usd(made.quota_micros)} (was ${usd(t.quota_micros)}; used ${usd(made.quota_used_micros || 0)}).`, true);
    return made;
  }

  async function refresh() {
    const tokens = await api("/tokens");
    const select = $("form-topup").elements.token;
    const keep = select.value;
    const store = tokens.data.filter((t) => !t.read_only);
    select.replaceChildren(...store.map((t) => el("option", { value: t.name },
      `${t.name} (${t.quota_micros < 0 ? "unlimited" : usd(t.quota_micros)})`)));
    if (store.some((t) => t.name === keep)) select.value = keep;
  }

  function wire(after) {
    const forms = [["form-token", createToken], ["form-channel", addChannel], ["form-price", setPrice], ["form-topup", topUp]];
    for (const [id, action] of forms) {
      const form = $(id);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const button = form.querySelector("button[type=submit]");
        button.disabled = true;
        try {
          await action(form);
          await refresh();
          after();
        } catch (e) {
          failed(form, e);
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  return { refresh, wire };
})();
