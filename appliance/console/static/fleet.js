// Re-renders the fleet table from GET /api/v1/enclaves every few seconds. Every value comes
// from an appliance or a pusher and is untrusted: text goes in with textContent only, never
// innerHTML. The page is complete without this script (server-rendered, same layout).
"use strict";

(function () {
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cell(className, children) {
    const td = element("td", className);
    children.forEach(function (child) { if (child) td.appendChild(child); });
    return td;
  }

  function counts(refusals) {
    const reasons = Object.keys(refusals || {});
    if (reasons.length === 0) return [document.createTextNode("none")];
    return reasons.map(function (reason) {
      return element("div", null, reason + ": " + refusals[reason]);
    });
  }

  function row(enclave) {
    const a = enclave.attestation || {};
    const status = enclave.status || {};
    const tr = element("tr");
    tr.dataset.enclave = enclave.id;

    const link = element("a", null, enclave.id);
    link.href = "/apps/" + encodeURIComponent(enclave.id);
    tr.appendChild(cell("appliance", [
      link, element("div", "url", enclave.url),
      enclave.simulated ? element("span", "simulated", "SIMULATED") : null,
    ]));

    const verdict = String(a.verdict || "unknown");
    const failed = a.failed_check ? element("div", "failed-check", "failed check: ") : null;
    if (failed) failed.appendChild(element("code", null, a.failed_check));
    tr.appendChild(cell("attestation", [
      element("span", "verdict verdict-" + verdict.replace(/[^a-z]/g, ""), verdict.toUpperCase()),
      failed, a.tcb_status ? element("div", "tcb", "TCB " + a.tcb_status) : null,
    ]));

    let digest = null;
    if (status.model_digest) {
      digest = element("div");
      digest.appendChild(element("code", "digest", status.model_digest));
    }
    tr.appendChild(cell("model", [element("span", "model-name", status.model || "none"), digest]));

    const progress = typeof status.progress === "number"
      ? element("span", "progress", " " + Math.round(status.progress * 100) + "%") : null;
    const note = status.error || status.message;
    tr.appendChild(cell("lifecycle", [
      element("span", "lifecycle-status", status.lifecycle || "unknown"), progress,
      note ? element("div", "lifecycle-message", note) : null,
    ]));

    const age = enclave.last_push_age_seconds;
    tr.appendChild(cell("push-age", [
      document.createTextNode(age === null || age === undefined ? "never"
        : Math.round(age) + " s ago"),
      element("div", "pushes", enclave.pushes_accepted + " accepted"),
    ]));

    const latest = enclave.refused_since_last_accept && enclave.last_refusal
      ? element("div", "refusal-message", "latest: " + enclave.last_refusal.message) : null;
    tr.appendChild(cell("refusals", counts(enclave.refusals).concat([latest])));
    return tr;
  }

  function render(fleet) {
    const rows = document.getElementById("fleet-rows");
    rows.replaceChildren.apply(rows, (fleet.enclaves || []).map(row));
    rows.dataset.renderedBy = "script";

    const unattributed = document.getElementById("unattributed-counts");
    unattributed.replaceChildren.apply(unattributed, counts(fleet.unattributed_refusals));
    const last = fleet.unattributed_last_refusal;
    document.getElementById("unattributed-last").textContent =
      last ? "latest: " + last.message : "";
    document.getElementById("refresh-state").textContent =
      "As of " + fleet.evaluated_at + " (refreshed).";
  }

  function refresh() {
    fetch("/api/v1/enclaves", { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(render)
      .catch(function (error) {
        document.getElementById("refresh-state").textContent =
          "Refresh failed (" + error.message + "); showing the last data.";
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const seconds = Number(document.getElementById("refresh-state").dataset.refreshSeconds) || 5;
    refresh();
    setInterval(refresh, seconds * 1000);
  });
})();
