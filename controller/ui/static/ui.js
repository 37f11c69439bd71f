// gpufabric dashboard: live refresh of the fleet (polling a server-rendered fragment). The pages work without it.
"use strict";

function startRefresh(container) {
  const url = container.dataset.refresh;
  const seconds = Math.max(2, Number(container.dataset.refreshS) || 5);
  const status = document.getElementById("live-status");
  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(url, { headers: { "X-Gpufabric-Fragment": "1" }, credentials: "same-origin" });
      if (response.status === 401) {
        if (status) status.textContent = "Signed out: reload the page to sign in again.";
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const html = await response.text();
      // Keep keyboard focus where it was if the focused link is still there after the update.
      const focused = document.activeElement && container.contains(document.activeElement)
        ? document.activeElement.getAttribute("href") : null;
      container.innerHTML = html;
      if (focused) {
        const again = container.querySelector('a[href="' + CSS.escape(focused) + '"]');
        if (again) again.focus();
      }
      if (status) status.textContent = "Updated " + new Date().toLocaleTimeString() + "; updates every " + seconds + " s.";
    } catch (err) {
      if (status) status.textContent = "Could not refresh (" + err.message + "); retrying.";
    }
  }
  window.setInterval(refresh, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
});
