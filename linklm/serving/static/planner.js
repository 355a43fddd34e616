// The planner's page: a form for one link, a CSV for many; answers from POST /v1/predict.
"use strict";

const fieldsBox = document.getElementById("fields");
const message = document.getElementById("message");

function asText(value) {
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// One labelled input per field of the example link, with a place for its error.
async function buildForm() {
  const example = await (await fetch("/v1/example")).json();
  for (const [name, value] of Object.entries(example)) {
    const label = document.createElement("label");
    label.htmlFor = "f-" + name;
    label.textContent = name;
    const cell = document.createElement("div");
    const input = document.createElement("input");
    input.id = "f-" + name;
    input.name = name;
    input.value = asText(value);
    const error = document.createElement("span");
    error.className = "error";
    error.dataset.field = name;
    error.id = "error-" + name;
    cell.append(input, error);
    fieldsBox.append(label, cell);
  }
  const info = await (await fetch("/v1/model")).json();
  document.getElementById("model").textContent =
    "Model: " + info.model + " (weights " + info.weights_sha256.slice(0, 12) + ")";
}

function clearErrors() {
  message.textContent = "";
  for (const span of document.querySelectorAll(".error")) span.textContent = "";
  for (const input of document.querySelectorAll("input.invalid")) input.classList.remove("invalid");
}

// The service's problems, each next to its field (or above the form when it names none).
function showProblems(body) {
  message.textContent = body.detail || "the service refused the link";
  for (const problem of body.problems || []) {
    const span = document.querySelector('.error[data-field="' + problem.field + '"]');
    if (span) {
      span.textContent = problem.message;
      document.getElementById("f-" + problem.field).classList.add("invalid");
    }
  }
}

function linkFromForm() {
  const link = {};
  for (const input of fieldsBox.querySelectorAll("input")) link[input.name] = input.value.trim();
  return link;
}

function scanOf(link) {
  try {
    const scan = JSON.parse(link.spectral_scan_dbm);
    return Object.entries(scan).map(([channel, dbm]) => ({ channel: Number(channel), dbm: Number(dbm) }));
  } catch (e) {
    return [];
  }
}

function showAnswer(link, answer) {
  const result = document.getElementById("result");
  result.hidden = false;
  const channel = answer.recommended_channel_mhz;
  const tput = answer.expected_throughput_mbps;
  const source = answer.source;
  const words = channel === null
    ? "No usable answer for this link (the model's answer failed its checks)."
    : "Channel " + channel + " MHz, expected throughput " +
      (tput === null ? "unknown" : tput.toFixed(2) + " Mbps") + ".";
  const by = source === "model" ? " Answered by the model."
    : source === "none" ? "" : " A fallback answered (" + source + "): the model's own answer was unusable.";
  const answerBox = document.getElementById("answer");
  answerBox.textContent = words + by;
  answerBox.className = source === "model" ? "" : "fallback";
  answerBox.dataset.source = source;
  const body = document.querySelector("#candidates tbody");
  body.innerHTML = "";
  for (let k = 1; answer["candidate_" + k + "_mhz"] !== undefined; k++) {
    if (answer["candidate_" + k + "_mhz"] === null) continue;
    const row = body.insertRow();
    row.insertCell().textContent = k;
    row.insertCell().textContent = answer["candidate_" + k + "_mhz"];
    const score = answer["candidate_" + k + "_score"];
    row.insertCell().textContent = score === null ? "" : (100 * score).toFixed(1) + " %";
  }
  document.getElementById("out-of-range").textContent = answer.out_of_range
    ? "Outside what the model saw: " + answer.out_of_range : "";
  drawScan(link, channel);
}

// The link's scan, the chosen channel marked, bars standing on the noise floor (dashed).
function drawScan(link, chosen) {
  const values = scanOf(link).map((d) => ({ ...d, chosen: d.channel === chosen ? "recommended" : "other" }));
  const floor = Number(link.noise_floor_dbm);
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: "Spectral scan (dBm) by channel",
    width: 640,
    height: 220,
    layer: [
      {
        data: { values },
        mark: "bar",
        encoding: {
          x: { field: "channel", type: "ordinal", title: "channel (MHz)" },
          // each bar rises from the noise floor to the channel's level: how far above it
          y: { field: "dbm", type: "quantitative", title: "level (dBm)", scale: { zero: false } },
          y2: { datum: floor },
          color: {
            field: "chosen", type: "nominal", title: "",
            scale: { domain: ["recommended", "other"], range: ["#d62728", "#9ecae1"] },
          },
          tooltip: [{ field: "channel" }, { field: "dbm" }],
        },
      },
      {
        data: { values: [{ floor }] },
        mark: { type: "rule", strokeDash: [4, 4] },
        encoding: { y: { field: "floor", type: "quantitative" } },
      },
    ],
  };
  return vegaEmbed("#chart", spec, { actions: false, renderer: "svg" });
}

async function submitLink(event) {
  event.preventDefault();
  clearErrors();
  const link = linkFromForm();
  const response = await fetch("/v1/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(link),
  });
  const body = await response.json();
  if (!response.ok) {
    document.getElementById("result").hidden = true;
    showProblems(body);
    return;
  }
  showAnswer(link, body);
}

async function submitCsv() {
  const box = document.getElementById("csv-message");
  box.textContent = "";
  const file = document.getElementById("csv-file").files[0];
  const text = file ? await file.text() : document.getElementById("csv-text").value;
  const response = await fetch("/v1/predict", {
    method: "POST", headers: { "Content-Type": "text/csv" }, body: text,
  });
  const body = await response.json();
  const table = document.getElementById("csv-answers");
  if (!response.ok) {
    table.hidden = true;
    box.textContent = body.detail;
    return;
  }
  const columns = ["scenario_id", "recommended_channel_mhz", "expected_throughput_mbps", "source"];
  table.tHead.innerHTML = "<tr>" + columns.map((c) => "<th>" + c + "</th>").join("") + "</tr>";
  const rows = table.tBodies[0];
  rows.innerHTML = "";
  for (const answer of body) {
    const row = rows.insertRow();
    for (const c of columns) row.insertCell().textContent = answer[c] === null ? "" : answer[c];
  }
  table.hidden = false;
}

document.getElementById("link-form").addEventListener("submit", submitLink);
document.getElementById("csv-submit").addEventListener("click", submitCsv);
buildForm().catch((e) => { message.textContent = "could not load the form: " + e; });
