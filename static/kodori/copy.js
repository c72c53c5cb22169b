// Copy buttons for the snippets on the key registration page (templates/encryption/register.html).
// Without JavaScript the buttons stay hidden and each snippet is plain text to select. The copied text is the
// <code> element's text, exactly what the page shows; the result is announced through the snippet's
// role="status" element.
(() => {
  const buttons = document.querySelectorAll("button[data-copy-snippet]");
  for (const button of buttons) button.hidden = false;

  // Insecure origins have no navigator.clipboard: copy the selection the old way, and if even that is
  // refused, leave the snippet selected for the owner to copy.
  function copySelected(code) {
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    if (copied) selection.removeAllRanges();
    return copied;
  }

  function announce(button, message) {
    const status = button.parentElement.querySelector(".snippet-status");
    if (!status) return;
    status.textContent = message;
    clearTimeout(status.clearTimer);
    status.clearTimer = setTimeout(() => { status.textContent = ""; }, 4000);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy-snippet]");
    if (!button) return;
    const code = document.getElementById(button.dataset.copySnippet);
    if (!code) return;
    const fallback = () => {
      announce(button, copySelected(code) ? "Copied" : "Selected: press Ctrl+C (⌘C) to copy");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(() => announce(button, "Copied"), fallback);
    } else {
      fallback();
    }
  });
})();
