//! tandem: the Customer Audience Connections (`/bankingAdmin`) and Invitations
//! (`/invitations`) APIs of a bank, in one service.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod html;
pub mod http;
pub mod mail;
pub mod private_files;
pub mod store;
pub mod sync;
pub mod telemetry;
