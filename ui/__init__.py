"""The photo app's pieces that are not page layout: the service object the page, its API routes and tests share
(``ui.backend.Backend``), the thumbnail / full-size photo routes and the login back-off (``ui.files``), and the
translations (``ui.i18n``). ``app.py`` builds the Gradio page on top of them."""
