// Chat playground (templates/serving/chat.html): each answer streams token by token as server-sent events
// read from a fetch() body (EventSource cannot POST), the turns are kept here and sent whole each time
// (the server renders them with the base's chat template), and Stop aborts the request: the server then
// stops generating and records what was generated. A finished (or stopped) answer is replaced by the
// server's rendering of it: reused spans highlighted, contributors paid, the fee.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root || !window.fetch || !window.TextDecoder) return;
  const form = root.querySelector("form");
  const log = root.querySelector("#chat-log");
  const send = root.querySelector("#chat-send");
  const stop = root.querySelector("#chat-stop");
  const clear = root.querySelector("#chat-clear");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const messages = [];
  let controller = null;
  root.querySelector("#chat-nojs").hidden = true;
  form.hidden = false;

  function turn(role, text) {
    const div = document.createElement("div");
    div.className = "chat-turn chat-" + role;
    const who = document.createElement("div");
    who.className = "chat-role";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("div");
    body.className = "chat-body";
    const out = document.createElement("div");
    out.className = "chat-text";
    out.textContent = text;
    body.append(out);
    div.append(who, body);
    log.append(div);
    div.scrollIntoView({block: "end"});
    return div;
  }

  function busy(on) {
    send.disabled = on;
    stop.disabled = !on;
    root.setAttribute("aria-busy", on ? "true" : "false");
  }

  // A line under an answer: an error (announced at once) or a note.
  function say(div, message, error) {
    const p = document.createElement("p");
    p.className = error ? "msg error" : "msg";
    p.setAttribute("role", error ? "alert" : "status");
    p.textContent = message;
    div.querySelector(".chat-body").append(p);
  }
  const fail = (div, message) => say(div, message, true);
  const note = (div, message) => say(div, message, false);

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // After Stop the server records the partial answer once it notices the closed stream: ask for the
  // rendered answer until it is there (202 while it is still being finished), backing off to 1 s and
  // giving up after about 30 s on a busy server, with a word rather than silence.
  async function fetchAnswer(div, id) {
    const url = root.dataset.answerUrl.replace("/0/", "/" + id + "/");
    for (let tries = 0, wait = 250; tries < 40; tries++, wait = Math.min(1000, wait * 1.5)) {
      const resp = await fetch(url, {headers: {"X-Requested-With": "fetch"}});
      if (resp.status === 202) { await sleep(wait); continue; }
      if (resp.ok) div.querySelector(".chat-body").innerHTML = await resp.text();
      return;
    }
    note(div, "Stopped. The server is still recording this answer, so its fee and contributors cannot be shown here.");
  }

  function number(name) {
    const value = form.elements[name].value;
    return value === "" ? null : Number(value);
  }

  async function ask(event) {
    event.preventDefault();
    const box = form.elements.content;
    const text = box.value.trim();
    if (!text || controller) return;
    messages.push({role: "user", content: text});
    turn("user", text);
    box.value = "";
    const div = turn("assistant", "");
    div.classList.add("chat-streaming");
    const out = div.querySelector(".chat-text");
    controller = new AbortController();
    busy(true);
    let id = null, answer = "", finished = false;
    try {
      const resp = await fetch(root.dataset.streamUrl, {
        method: "POST", signal: controller.signal,
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "text/event-stream"},
        body: JSON.stringify({messages: messages, temperature: number("temperature"), top_p: number("top_p"),
                              max_tokens: number("max_tokens")}),
      });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        throw new Error(body.error || ("The server answered " + resp.status));
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (!block.startsWith("data: ")) continue;
          const data = JSON.parse(block.slice(6));
          if (data.inference_id) id = data.inference_id;
          if (data.delta) { answer += data.delta; out.textContent = answer; }
          if (data.error) throw new Error(data.error);
          if (data.html !== undefined) {
            answer = data.text;
            div.querySelector(".chat-body").innerHTML = data.html;  // rendered and escaped by the server
            finished = true;
          }
        }
      }
    } catch (err) {
      if (err.name === "AbortError") {
        if (id) await fetchAnswer(div, id);
        else note(div, "Stopped before the answer started.");
      } else {
        fail(div, err.message);
      }
    } finally {
      controller = null;
      div.classList.remove("chat-streaming");
      busy(false);
    }
    if (answer) {
      messages.push({role: "assistant", content: answer});
    } else if (!finished) {
      messages.pop();  // nothing came back: the question can be asked again
    }
    div.scrollIntoView({block: "end"});
  }

  form.addEventListener("submit", ask);
  form.elements.content.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  stop.addEventListener("click", () => { if (controller) controller.abort(); });
  clear.addEventListener("click", () => { if (!controller) { messages.length = 0; log.replaceChildren(); } });
})();
