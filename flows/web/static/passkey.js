// Passkeys on the approval page (served from 'self'; the page is otherwise without script).
//
// A form marked data-passkey="get" (a decision) or "create" (an enrolment) is sent in two steps:
// first its CSRF token (and, to enrol, the one-time code) to <this address>/options, which
// answers with a challenge as JSON; the browser then asks the person's authenticator, and the
// form is posted with the authenticator's answer, as JSON, in its hidden "passkey" field.
"use strict";

(function () {
  const form = document.querySelector("form[data-passkey]");
  if (!form) {
    return;
  }
  const mode = form.dataset.passkey;
  const status = document.getElementById("passkey-status");

  function say(text) {
    if (status) {
      status.textContent = text;
      status.className = "problems";
    }
  }

  function fromB64url(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  }

  function toB64url(buffer) {
    let raw = "";
    for (const byte of new Uint8Array(buffer)) {
      raw += String.fromCharCode(byte);
    }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withBuffers(options) {
    const decoded = Object.assign({}, options, { challenge: fromB64url(options.challenge) });
    if (options.user) {
      decoded.user = Object.assign({}, options.user, { id: fromB64url(options.user.id) });
    }
    for (const list of ["allowCredentials", "excludeCredentials"]) {
      if (options[list]) {
        decoded[list] = options[list].map((c) => Object.assign({}, c, { id: fromB64url(c.id) }));
      }
    }
    return decoded;
  }

  function answerJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) {
        response.userHandle = toB64url(r.userHandle);
      }
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
    });
  }

  async function challenge() {
    const body = new URLSearchParams();
    for (const name of ["csrf", "code"]) {
      if (form.elements[name]) {
        body.set(name, form.elements[name].value);
      }
    }
    const address = window.location.pathname.replace(/\/+$/, "") + "/options";
    const answer = await fetch(address, { method: "POST", body: body, credentials: "same-origin" });
    const data = await answer.json();
    if (!answer.ok) {
      throw new Error(data.error || "The page could not start the passkey check.");
    }
    return withBuffers(data);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say("This browser cannot use passkeys. Open the link in a current browser.");
      return;
    }
    try {
      const publicKey = await challenge();
      const credential =
        mode === "create"
          ? await navigator.credentials.create({ publicKey: publicKey })
          : await navigator.credentials.get({ publicKey: publicKey });
      form.elements.passkey.value = answerJSON(credential);
    } catch (error) {
      if (error && error.name === "NotAllowedError") {
        say("No passkey of yours was used (cancelled, timed out, or none on this device). Nothing was submitted.");
      } else {
        say(error && error.message ? error.message : "The passkey check failed. Nothing was submitted.");
      }
      return;
    }
    form.submit(); // the native submission: no second pass through this handler
  });
})();
