// /docs: Swagger UI from the service's own files, with no inline script (the pages'
// Content-Security-Policy allows none). Writes made with the browser's session carry its
// CSRF token; the validator badge, which would call another host, is off.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    requestInterceptor: (request) => {
      if (meta && meta.content) request.headers["X-CSRF-Token"] = meta.content;
      return request;
    },
  });
});
