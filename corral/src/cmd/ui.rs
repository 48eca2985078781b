//! `corral ui`: serves the operators' web UI on loopback with this operator's certificate.

use super::client_options;
use crate::cli::UiArgs;
use anyhow::Result;

pub async fn ui(args: UiArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let ui = webui::Ui::bind(&args.listen, opts).await?;
    // The address line is what scripts (and the tests) read to find the UI.
    println!("corral ui: serving http://{}/", ui.local_addr());
    tracing::info!(addr = %ui.local_addr(), "serving the web UI");
    ui.run(super::shutdown_signal()).await;
    Ok(0)
}
